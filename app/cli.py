"""The `virtdeck` command: serve, migrate."""

import argparse
import logging

import uvicorn

from app.config import get_settings
from app.migrate import upgrade


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the subcommand."""
    parser = argparse.ArgumentParser(prog="virtdeck", description="virt-manager in the browser")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations and serve the web app")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    commands.add_parser("migrate", help="apply pending database migrations")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    upgrade(settings.database_url)
    if args.command == "serve":
        from app.main import create_app

        uvicorn.run(create_app(settings), host=args.host, port=args.port)
