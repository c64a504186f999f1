"""kiri-atom: not part of this version of KIRI yet."""

import sys

from kiri.stages import unavailable


def main(argv: list[str] | None = None) -> int:
    return unavailable("kiri-atom")


if __name__ == "__main__":
    sys.exit(main())
