"""The `virtdeck` command: serve, worker, migrate, create-user, create-token."""

import argparse
import getpass
import logging
import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.config import get_settings
from app.db import make_engine, make_session_factory, transaction
from app.errors import NotFound, VirtdeckError
from app.models import ROLES, User
from app.models.base import utcnow
from app.services.auth import create_token
from app.services.users import create_user

if TYPE_CHECKING:  # the worker process never loads the web server
    from fastapi import FastAPI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtdeck", description="virt-manager in the browser")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="apply pending migrations and serve the web app")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    where = serve.add_mutually_exclusive_group()
    where.add_argument(
        "--no-worker",
        action="store_true",
        help="start no worker beside the server (run `virtdeck worker` yourself)",
    )
    where.add_argument(
        "--worker-inside",
        action="store_true",
        help="run the worker inside the server's process (one process: for test-driver node "
        "files, whose state is private to each connection)",
    )
    worker = commands.add_parser(
        "worker", help="apply pending migrations and sync the hosts and run jobs (no web server)"
    )
    # `virtdeck serve` wakes the worker it starts through its stdin.
    worker.add_argument("--wake-stdin", action="store_true", help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply pending database migrations")
    user = commands.add_parser(
        "create-user", help="create a user (password from a prompt or stdin)"
    )
    user.add_argument("name")
    user.add_argument("--role", choices=ROLES, required=True)
    token = commands.add_parser("create-token", help="print a new API token for a user")
    token.add_argument("user", help="the user the token acts for")
    token.add_argument("--name", required=True, help="a label for the token")
    token.add_argument("--role", choices=ROLES, help="the user's role (default) or a lower one")
    token.add_argument("--expires-days", type=float, help="days until it expires (default never)")
    return parser


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password again: "):
        raise VirtdeckError("the passwords differ")
    return first


def _create_user(database_url: str, args: argparse.Namespace) -> str:
    password = _read_password()
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        user = create_user(session, name=args.name, password=password, role=args.role)
        message = f"created {user.role} {user.name}"
    engine.dispose()
    return message


def _create_token(database_url: str, args: argparse.Namespace) -> str:
    expires = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
    engine = make_engine(database_url)
    with transaction(make_session_factory(engine)) as session:
        user = session.scalar(select(User).where(User.name == args.user))
        if user is None:
            raise NotFound(f"user {args.user} not found")
        secret, _token = create_token(
            session, user, name=args.name, role=args.role, expires_at=expires
        )
    engine.dispose()
    return secret


def _serve(app: "FastAPI", host: str, port: int, forwarded_allow_ips: str) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, ending the open event streams as soon as it is asked to stop: it waits for
        open requests before shutting the app down, and an event stream never ends by itself."""

        def handle_exit(self, sig: int, frame: object) -> None:
            self.config.app.state.live.stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=host, port=port, proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips
    )
    Server(config).run()


def _migrate_apart() -> None:
    """`virtdeck migrate` in a child process (its output is this one's); exits if it failed."""
    done = subprocess.run([sys.executable, "-m", "app.cli", "migrate"], check=False)
    if done.returncode != 0:
        sys.exit(f"virtdeck: the database migration failed (exit status {done.returncode})")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the subcommand."""
    args = _parser().parse_args(argv)
    if args.command in ("serve", "worker"):
        from app.workers.memory import limit_malloc_arenas

        limit_malloc_arenas()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    if args.command in ("serve", "worker"):
        # Long-running processes migrate in a child process: alembic would otherwise keep
        # 10 MiB of their memory. A worker that serve started needs no migration at all.
        if not getattr(args, "wake_stdin", False):
            _migrate_apart()
    else:
        from app.migrate import upgrade

        upgrade(settings.database_url)
    if args.command == "serve":
        from app.main import create_app
        from app.workers.memory import collect_less
        from app.workers.process import WorkerChild

        child = None if args.no_worker or args.worker_inside else WorkerChild()
        if child is not None:
            child.start()
        try:
            app = create_app(
                settings, worker=args.worker_inside, wake=child.wake if child is not None else None
            )
            collect_less()
            _serve(app, args.host, args.port, settings.forwarded_allow_ips)
        finally:
            if child is not None:
                child.stop()
        return
    if args.command == "worker":
        from app.workers.process import run_worker

        run_worker(settings, wake_stdin=args.wake_stdin)
        return
    try:
        if args.command == "create-user":
            print(_create_user(settings.database_url, args))
        elif args.command == "create-token":
            print(_create_token(settings.database_url, args))
    except VirtdeckError as exc:
        sys.exit(f"virtdeck: {exc.message}")


if __name__ == "__main__":  # `python -m app.cli`, as `virtdeck serve` starts its worker
    main()
