"""`make bench`: the backup benchmark, then the health benchmark when present."""

from bench import backup_bench


def main() -> None:
    backup_bench.main()
    try:
        from bench import bench_health
    except ImportError:
        return
    print("\n")
    bench_health.run()


if __name__ == "__main__":
    main()
