"""Builds brgemm._core: the ISA-neutral core, the layer drivers and their bindings (layers/bindings) as one pybind11 extension, and each
ISA's kernels as a static library with that ISA's flags (build_clib). An ISA whose flags the
compiler rejects is left out of the build, and the dispatcher never selects it."""

import json
import os
import shlex
import subprocess
import sysconfig
import tempfile
from glob import glob

from Cython.Build import cythonize
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import Extension, setup

# Level → (kernel folder, flags, a line that only compiles when the flags work).
ISAS = [
    ("avx2", "avx2", ["-mavx2", "-mfma", "-mf16c"],
     "__m256 f(__m256 a) { return _mm256_fmadd_ps(a, _mm256_cvtph_ps(_mm_setzero_si128()), a); }"),
    ("avx512", "avx512", ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
     "__m512 f(__m512 a) { return _mm512_maskz_loadu_ps(3, &a); }"),
    ("avx512_vnni", "avx512vnni",
     ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"],
     "__m512i f(__m512i a) { return _mm512_dpbusd_epi32(a, a, a); }"),
    ("avx512_bf16", "avx512bf16",
     ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
      "-mavx512vnni", "-mavx512bf16"],
     "__m512 f(__m512 a, __m512bh b) { return _mm512_dpbf16_ps(a, b, b); }"),
]
# No contraction of a*b + c into FMA: the epilogues' stages must round exactly as their scalar
# twin does (the kernels' FMAs are explicit intrinsics and stay). BRGEMM_OPT: the optimisation
# level (CI's sanitizer build takes -O1: it compiles in half the time and still finds what -O3 would).
OPT = os.environ.get("BRGEMM_OPT", "-O3")
COMMON = ["-std=c++17", OPT, "-fPIC", "-ffp-contract=off"]
INCLUDE = ["csrc/include"]
# build_clib rebuilds a library only when a source is newer than its object: the headers the
# kernels include (the tile skeletons, the .inc lists, the public header) are named here so
# that editing one rebuilds them.
KERNEL_DEPS = {"": sorted(glob("csrc/include/brgemm/*.h") + glob("csrc/kernels/**/*.h", recursive=True)
                          + glob("csrc/kernels/*.inc"))}


def compiler_accepts(flags, line):
    cxx = shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write("#include <immintrin.h>\n" + line + "\n")
        cmd = cxx + ["-c", src, "-o", os.path.join(tmp, "probe.o")] + flags
        return subprocess.run(cmd, capture_output=True).returncode == 0


libraries = [("brgemm_kernels_scalar",
              {"sources": sorted(glob("csrc/kernels/ref/*.cpp")), "include_dirs": INCLUDE, "cflags": COMMON,
               "obj_deps": KERNEL_DEPS})]
macros, flags_by_isa = [], {"scalar": COMMON}
for level, folder, flags, probe in ISAS:
    if not compiler_accepts(flags, probe):
        print(f"brgemm: the compiler rejects {' '.join(flags)}; leaving {level} out of the build")
        break  # levels are cumulative: nothing above a missing level can be used
    libraries.append((f"brgemm_kernels_{folder}",
                      {"sources": sorted(glob(f"csrc/kernels/{folder}/*.cpp")),
                       "include_dirs": INCLUDE, "cflags": COMMON + flags, "obj_deps": KERNEL_DEPS}))
    macros.append((f"BRGEMM_BUILT_{level.upper()}", "1"))
    flags_by_isa[level] = COMMON + flags

# The flags travel into the module as a C string literal holding JSON (`python -m brgemm info`).
macros.append(("BRGEMM_BUILD_FLAGS", json.dumps(json.dumps(flags_by_isa))))

core = Pybind11Extension(
    "brgemm._core",
    sources=sorted(glob("csrc/core/*.cpp")) + sorted(glob("layers/*.cpp")) + sorted(glob("layers/bindings/*.cpp")),
    include_dirs=INCLUDE,
    define_macros=macros,
    extra_compile_args=[OPT, "-fopenmp"],
    extra_link_args=["-fopenmp"],
    cxx_std=17,
    # build_ext relinks only when a listed file is newer than the module: the kernel libraries'
    # inputs are listed so that a kernel edit reaches the module.
    depends=sorted(glob("csrc/kernels/**/*.cpp", recursive=True)) + KERNEL_DEPS[""]
    + sorted(glob("layers/**/*.h", recursive=True)),
)

# The quantization toolkit's histogram search (brgemm.quant): a per-range loop, in Cython.
l2search = Extension("brgemm._l2search", ["brgemm/_l2search.pyx"], extra_compile_args=[OPT])

# Every translation unit (kernels and module alike) compiles on all cores: a serial build of the
# ~200 files is most of CI's time, and twice that under the sanitizers. BRGEMM_BUILD_JOBS=1 for one.
ParallelCompile("BRGEMM_BUILD_JOBS", default=0).install()

setup(libraries=libraries, ext_modules=[core] + cythonize([l2search], quiet=True))
