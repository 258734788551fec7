"""asv benchmarks for brgemm; one bench_<area>.py per tests/test_<area>.py."""
