import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C before the CLI has started: no traceback for that either
    print("interrupted (Ctrl-C)", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
