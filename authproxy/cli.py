"""Command line: argument parsing and dispatch only.

    authproxy run --config FILE        serve (workers: N starts a supervisor)
    authproxy check-config FILE        validate; exit 0 with a summary, or 2 listing every error
    authproxy store init --config FILE create the DynamoDB session table, or add what an older
                                       release's table lacks (the back-channel logout indexes); idempotent
    authproxy demo [--port 8480]       the demo: development provider, echo upstream and the proxy
    authproxy dev-idp [--port 9400]    a development OpenID provider that behaves like Cognito
    authproxy config-reference [-o FILE] [--json-schema FILE]
                                       the configuration reference (Markdown) and JSON Schema
    authproxy healthcheck [--config FILE] [--url URL]
                                       exit 0 when /readyz answers 200 (for a compose healthcheck)
    authproxy --version
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from authproxy import __version__
from authproxy.config import Config, load_config
from authproxy.errors import ConfigError

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    return int(args.func(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authproxy", description="Authentication proxy for OIDC and AWS Cognito.")
    parser.add_argument("--version", action="version", version=f"authproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the proxy")
    run.add_argument("--config", "-c", default=os.environ.get("AUTHPROXY_CONFIG"), help="YAML file (env AUTHPROXY_CONFIG)")
    run.set_defaults(func=_run)

    health = commands.add_parser(
        "healthcheck",
        help="exit 0 if the admin listener's /readyz answers 200, else 1 (the image has no curl)",
    )
    health.add_argument("--config", "-c", default=os.environ.get("AUTHPROXY_CONFIG"),
                        help="read admin_listen from this file (env AUTHPROXY_CONFIG)")
    health.add_argument("--url", help="the URL to ask instead (default http://ADMIN_LISTEN/readyz)")
    health.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    health.set_defaults(func=_healthcheck)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(func=_check_config)

    store = commands.add_parser("store", help="session store administration")
    store_commands = store.add_subparsers(dest="store_command", metavar="STORE_COMMAND", required=True)
    init = store_commands.add_parser(
        "init", help="create the DynamoDB table (PAY_PER_REQUEST, TTL, the back-channel logout indexes), "
                     "or add the indexes to an existing table; idempotent")
    init.add_argument("--config", "-c", default=os.environ.get("AUTHPROXY_CONFIG"), required=False)
    init.add_argument("--wait", type=float, default=600.0, metavar="SECONDS",
                      help="how long to wait for the table and each new index to become ACTIVE (an index added "
                           "to a table with many sessions is backfilled first); default 600")
    init.set_defaults(func=_store_init)

    demo = commands.add_parser("demo", help="run the self-contained demo (development provider, echo upstream, proxy)")
    # Defaults (8480-8483) are used when free; a busy default gives way to a free port.
    demo.add_argument("--port", type=int, help="the proxy, the URL to open (default 8480)")
    demo.add_argument("--idp-port", type=int, help="the development identity provider (default 8481)")
    demo.add_argument("--upstream-port", type=int, help="the echo upstream (default 8482)")
    demo.add_argument("--admin-port", type=int, help="/healthz /readyz /metrics (default 8483)")
    demo.set_defaults(func=_demo)

    dev_idp = commands.add_parser(
        "dev-idp",
        help="a development OpenID provider that behaves like AWS Cognito (not for production)",
        description="Serve a development OpenID provider that behaves like AWS Cognito's hosted UI, with demo users "
        "alice (group admins) and bob (password = username). Not for production. Configure the proxy with "
        "provider: cognito and issuer = cognito_domain = the printed issuer.",
    )
    dev_idp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dev_idp.add_argument("--port", type=int, default=9400, help="port (default 9400; 0 picks a free one)")
    dev_idp.add_argument("--issuer", default=None, help="issuer URL (default http://HOST:PORT)")
    dev_idp.add_argument("--client-id", help="the web client's id (default authproxy-demo)")
    dev_idp.add_argument("--client-secret", help="the web client's secret (default: a well-known demo value)")
    dev_idp.add_argument("--redirect-uri", action="append", help="allowed redirect URI (repeatable)")
    dev_idp.add_argument("--logout-uri", action="append", help="allowed sign-out URL (repeatable)")
    dev_idp.add_argument("--machine-client-id", help="the client_credentials client's id (default authproxy-demo-machine)")
    dev_idp.add_argument("--machine-client-secret", help="its secret (default: a well-known demo value)")
    dev_idp.add_argument("--machine-scope", action="append", help="a scope the machine client may get (repeatable)")
    dev_idp.add_argument("--access-token-lifetime", type=int, default=300,
                         help="seconds (default 300, Cognito's minimum; the demo uses 120 to show refreshes)")
    dev_idp.add_argument("--id-token-lifetime", type=int, default=3600, help="seconds (default 3600)")
    dev_idp.add_argument("--pool-id", help="Cognito's layout: the hosted UI on --port, the issuer .../POOL_ID (like "
                         "eu-west-1_DevPool1) on a second port, its updated form on a third")
    dev_idp.add_argument("--issuer-format", choices=("original", "updated"), default="original",
                         help="with --pool-id: which issuer form new tokens carry (default original)")
    dev_idp.add_argument("--rotation-grace", type=int, metavar="SECONDS",
                         help="refresh-token rotation on, the used token dying after 0-60 s (default: rotation off)")
    dev_idp.set_defaults(func=_dev_idp)

    reference = commands.add_parser(
        "config-reference",
        help="write the configuration reference (Markdown) and its JSON Schema, generated from the schema",
        description="Generate the configuration reference from the schema. The committed copies are regenerated with: "
        "authproxy config-reference -o docs/configuration.md --json-schema docs/config.schema.json",
    )
    reference.add_argument("-o", "--output", default="-", help="Markdown file (default: standard output)")
    reference.add_argument("--json-schema", metavar="FILE", help="also write a JSON Schema (for yaml-language-server)")
    reference.set_defaults(func=_config_reference)

    worker = commands.add_parser("worker")  # internal: started by the supervisor
    worker.add_argument("--config", required=True)
    worker.add_argument("--config-dir", required=True)
    worker.add_argument("--status-fd", type=int, required=True)
    worker.add_argument("--metrics-dir", required=True)
    worker.add_argument("--supervisor-pid", type=int, required=True)
    worker.set_defaults(func=_worker)
    return parser


def _load(path: str | None, base_dir: str | None = None) -> Config | None:
    if not path:
        print("authproxy: no configuration: pass --config FILE or set AUTHPROXY_CONFIG", file=sys.stderr)
        return None
    try:
        return load_config(path, base_dir=base_dir)
    except ConfigError as exc:
        print(f"authproxy: invalid configuration ({len(exc.issues)} problem(s)):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue.render(exc.filename)}", file=sys.stderr)
        return None


def _healthcheck(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        config = _load(args.config) if args.config else None
        if args.config and config is None:
            return 1
        admin = config.admin_listen if config is not None else None
        host = "127.0.0.1" if admin is None or admin.host in ("0.0.0.0", "::") else admin.host
        port = 9090 if admin is None else admin.port
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}/readyz"
    try:
        # Never through HTTP_PROXY (set for the provider's calls): the admin listener is local.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=args.timeout) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        ok = False
    print(f"{url}: {'ready' if ok else 'not ready'}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return EXIT_CONFIG
    from authproxy.policy.allow import email_rule_warnings

    for warning in email_rule_warnings(config):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    names = ", ".join(route.name for route in config.routes)
    provider = config.oidc.provider if config.oidc is not None else "none"
    store = config.store.backend if config.oidc is not None else "none"
    print(
        f"{args.file}: ok: {len(config.routes)} route(s) ({names}); store: {store}; provider: {provider}; "
        f"listen {config.listen}, admin {config.admin_listen}, workers {config.workers}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from authproxy.logs import configure_logging

    configure_logging(config.log)
    from authproxy.web.cpus import worker_count

    workers = worker_count(config)
    if workers > 1:
        from authproxy.web.supervisor import Supervisor

        return _run_loop(Supervisor(config, args.config, workers).run())
    from authproxy.web.server import serve

    return _run_loop(serve(config, config_path=args.config))


def _worker(args: argparse.Namespace) -> int:
    config = _load(args.config, args.config_dir)
    if config is None:
        return EXIT_CONFIG
    from authproxy.logs import configure_logging
    from authproxy.web.server import serve

    _die_with_parent(args.supervisor_pid)
    configure_logging(config.log)
    return _run_loop(
        serve(config, config_path=args.config, reuse_port=True, status_fd=args.status_fd, serve_admin=False,
              metrics_dir=args.metrics_dir, config_dir=args.config_dir)
    )


def _store_init(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.store.backend != "dynamodb" or config.store.dynamodb is None:
        print("authproxy: store init: store.backend is not dynamodb; nothing to create", file=sys.stderr)
        return EXIT_CONFIG
    from authproxy.logs import configure_logging
    from authproxy.store.base import StoreError
    from authproxy.store.dynamodb import INDEXES, DynamoDBStore

    configure_logging(config.log)
    settings = config.store.dynamodb

    async def init() -> int:
        store = DynamoDBStore(settings.table, region=settings.region, endpoint_url=settings.endpoint_url)
        await store.open()
        try:
            await store.create_table(args.wait, upgrade=True)
        except StoreError as exc:
            print(f"authproxy: store init failed: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()
        indexes = ", ".join(index["IndexName"] for index in INDEXES)
        print(f"table {settings.table} is ready (region {settings.region}; indexes {indexes})")
        return 0

    return asyncio.run(init())


def _die_with_parent(supervisor_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when its supervisor dies (prctl PR_SET_PDEATHSIG),
    so a killed supervisor never leaves workers holding the shared port."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the supervisor's own shutdown still stops workers
        return
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _demo(args: argparse.Namespace) -> int:
    from authproxy.demo.run import DemoPorts, run_demo

    given = {"proxy": args.port, "idp": args.idp_port, "upstream": args.upstream_port, "admin": args.admin_port}
    explicit = {name: port for name, port in given.items() if port is not None}
    return _run_loop(run_demo(DemoPorts(**explicit), set(explicit)))


def _dev_idp(args: argparse.Namespace) -> int:
    """Serve the development provider until SIGTERM/SIGINT; exit 0."""
    import signal

    from authproxy.demo import idp

    clients = idp.demo_clients(
        client_id=args.client_id or idp.DEFAULT_CLIENT_ID,
        client_secret=args.client_secret or idp.DEFAULT_CLIENT_SECRET,
        redirect_uris=args.redirect_uri or [idp.DEFAULT_REDIRECT_URI],
        logout_uris=args.logout_uri or [idp.DEFAULT_LOGOUT_URI],
        machine_client_id=args.machine_client_id or idp.DEFAULT_MACHINE_CLIENT_ID,
        machine_client_secret=args.machine_client_secret or idp.DEFAULT_MACHINE_CLIENT_SECRET,
        machine_scopes=args.machine_scope or list(idp.DEFAULT_MACHINE_SCOPES),
        refresh_token_rotation=args.rotation_grace is not None,
        rotation_grace_period=args.rotation_grace or 0,
    )

    async def serve() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            server = await idp.start(
                clients,
                host=args.host,
                port=args.port,
                issuer=args.issuer,
                pool_id=args.pool_id,
                **({"issuer_format": args.issuer_format} if args.pool_id else {}),
                access_token_lifetime=args.access_token_lifetime,
                id_token_lifetime=args.id_token_lifetime,
                announce=lambda text: print(text, flush=True),
            )
        except OSError as exc:
            print(f"authproxy dev-idp: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"issuer: {server.issuer}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.close()
        return 0

    return _run_loop(serve())


def _config_reference(args: argparse.Namespace) -> int:
    from authproxy.config import reference

    outputs = [(args.output, reference.markdown())]
    if args.json_schema:
        outputs.append((args.json_schema, reference.json_schema_text()))
    for path, text in outputs:
        if path == "-":
            sys.stdout.write(text)
            continue
        try:
            with open(path, "w", encoding="utf-8") as file:
                file.write(text)
        except OSError as exc:
            print(f"authproxy: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when installed (faster event loop), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
