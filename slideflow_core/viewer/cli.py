"""``sfc view``: serve a slide, store, project or run in the local web viewer."""

from __future__ import annotations

import argparse
import webbrowser

from slideflow_core.cli import add_command


def register_view(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sfc view TARGET``."""
    parser = add_command(
        subparsers,
        "view",
        help="open slides with their overlays in a local web viewer",
        description="Serve a slide file, a slide store, a project folder or runs/<run> on "
        "127.0.0.1 (a free port unless --port is given) and print the address. Layers: tissue "
        "outlines, tile heatmap (QC values and MIL scores), cells at high zoom. Ctrl-C stops it.",
    )
    parser.add_argument(
        "target", help="slide file, <slide>.zarr store, project folder or runs/<run>"
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one)")
    parser.add_argument("--open", action="store_true", help="open the page in the web browser")
    parser.set_defaults(func=_run_view)


def _run_view(args: argparse.Namespace) -> int:
    from slideflow_core.viewer.server import ViewerServer

    server = ViewerServer(args.target, port=args.port)
    slides = ", ".join(server.app.catalog)
    print(f"serving {slides}")
    print(f"viewer at {server.url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
