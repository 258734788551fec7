"""`python -m brgemm info | peak | bench | demo` (demo: a CNN and an LSTM trained on scikit-learn's
digits in plain PyTorch and converted to brgemm, then the CNN in int8; brgemm/demo.py)."""

import argparse
import importlib.util
import json
import os
import sys

from . import _core, __version__


def info():
    print(f"brgemm {__version__}")
    print(f"  detected ISA : {_core.detected_isa()}")
    print(f"  active ISA   : {_core.isa()}" + (f"  (BRGEMM_ISA={os.environ['BRGEMM_ISA']})" if os.environ.get("BRGEMM_ISA") else ""))
    print(f"  available    : {', '.join(_core.available_isas())}")
    print(f"  built        : {', '.join(_core.built_isas())}")
    print(f"  threads      : {_core.get_num_threads()} (os.cpu_count() = {os.cpu_count()})")
    print("  build flags per ISA:")
    for isa, flags in json.loads(_core.build_flags()).items():
        print(f"    {isa:12} {' '.join(flags)}")
    print("  microkernels:")
    for u in _core.ukernels():
        state = "available" if u["available"] else f"not available ({u['isa']} missing)"
        print(f"    {u['name']:28} {state}")
    for peer in ("numpy", "torch", "onnxruntime", "openvino", "threadpoolctl", "matplotlib"):  # the bench's peers
        if importlib.util.find_spec(peer) is not None:
            from importlib.metadata import version
            try:
                print(f"  {peer:13}: {version(peer)}")
            except Exception:
                print(f"  {peer:13}: installed")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    # No help option here: `bench --help` and `demo --help` reach their own parsers.
    parser = argparse.ArgumentParser(prog="python -m brgemm", add_help=False)
    parser.add_argument("command", choices=["info", "peak", "bench", "demo"])
    parser.add_argument("--refresh", action="store_true", help="peak: measure again instead of using the cache")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args, rest = parser.parse_known_args(argv)
    if args.command == "info":
        return info()
    if args.command == "peak":
        from .peak import get_peak, report, _cache_file
        print(report(get_peak(refresh=args.refresh)))
        print(f"\n(cached in {_cache_file()}; --refresh measures again)")
        return 0
    if args.command == "demo":
        from .demo import main as demo_main
        return demo_main(rest)
    from .bench import main as bench_main
    return bench_main(rest)


if __name__ == "__main__":
    sys.exit(main())
