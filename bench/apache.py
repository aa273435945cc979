"""The peer: Apache httpd 2.4 + mod_auth_openidc (Debian packages) in front of the bench's nginx.

One httpd per worker count, run in the foreground from a config of its own (nothing of
/etc/apache2 is read besides the module binaries), listening on 127.0.0.1:

- ``/login/``: ``AuthType openid-connect`` against the test oidc-provider (code flow with
  PKCE S256, sessions ``server-cache`` in ``shm``, as PEERS.md describes a production set-up);
  claims are handed over as environment variables only (``OIDCPassClaimsAs environment``) and
  exactly three headers are injected, as on authproxy's injecting route:
  ``Authorization: Bearer <access token>``, ``X-User-Email``, ``X-User-Groups``.
- ``/bearer/``: ``AuthType oauth20``, a resource server verifying JWT access tokens against the
  provider's JWKS (``OIDCOAuthVerifyJwksUri``), requiring the same audience as authproxy
  (``Require claim aud:<resource>``), passing the two claim headers (the client's Authorization
  goes on untouched, as with authproxy's ``pass_authorization: true``).

``workers`` is the number of httpd processes (event MPM, ``ThreadsPerChild`` threads each), so
both rows use both cores like authproxy's workers do. Access lines are written to a file, as
authproxy writes its own.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

MODULES = Path("/usr/lib/apache2/modules")
OPENIDC = MODULES / "mod_auth_openidc.so"
THREADS_PER_CHILD = 128  # well above the wrk connections: a saturated event MPM closes keep-alive connections

CONF = """
ServerRoot {work}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {work}/httpd.pid
DefaultRuntimeDir {work}
Mutex file:{work} default
ErrorLog {work}/error.log
LogLevel warn
User www-data
Group www-data

LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule auth_openidc_module {modules}/mod_auth_openidc.so

StartServers {workers}
ServerLimit {workers}
ThreadLimit {threads}
ThreadsPerChild {threads}
MaxRequestWorkers {max_workers}
MinSpareThreads 1
MaxSpareThreads {max_workers}
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 75

LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" bench
CustomLog {work}/access.log bench

OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID {client_id}
OIDCClientSecret {client_secret}
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCRedirectURI {redirect_uri}
OIDCCryptoPassphrase bench-passphrase-0123456789-0123456789
OIDCScope "openid email profile groups"
OIDCPKCEMethod S256
OIDCSessionType server-cache
OIDCCacheType shm
OIDCCacheShmMax 20000
OIDCSessionInactivityTimeout 7200
OIDCSessionMaxDuration 43200
OIDCPassClaimsAs environment
OIDCOAuthVerifyJwksUri {jwks_uri}
OIDCOAuthSSLValidateServer Off
OIDCOAuthRemoteUserClaim sub

ProxyPass /login/ http://127.0.0.1:{upstream_port}/login/
ProxyPass /bearer/ http://127.0.0.1:{upstream_port}/bearer/

<Location /login/>
    AuthType openid-connect
    Require valid-user
    RequestHeader set Authorization "Bearer %{{OIDC_access_token}}e"
    RequestHeader set X-User-Email "%{{OIDC_CLAIM_email}}e"
    RequestHeader set X-User-Groups "%{{OIDC_CLAIM_groups}}e"
</Location>

<Location /bearer/>
    AuthType oauth20
    Require claim aud:{audience}
    RequestHeader set X-User-Email "%{{OIDC_CLAIM_email}}e"
    RequestHeader set X-User-Groups "%{{OIDC_CLAIM_groups}}e"
</Location>
"""


def available() -> str | None:
    """None when httpd and mod_auth_openidc are installed, else what is missing."""
    missing = [name for name, ok in (("apache2", binary() is not None), ("libapache2-mod-auth-openidc", OPENIDC.exists()))
               if not ok]
    return " ".join(missing) or None


def binary() -> str | None:
    return shutil.which("apache2") or ("/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None)


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}/login/redirect_uri"


class Apache:
    def __init__(self, work: Path, port: int, workers: int, upstream_port: int, issuer: str, jwks_uri: str, client_id: str,
                 client_secret: str, audience: str):
        self.work, self.port, self.workers = work, port, workers
        work.mkdir(parents=True, exist_ok=True)
        shutil.chown(work, "www-data", "www-data")  # the children (www-data) may need to write there
        (work / "httpd.conf").write_text(CONF.format(
            work=work, port=port, modules=MODULES, workers=workers, threads=THREADS_PER_CHILD,
            max_workers=THREADS_PER_CHILD * workers, issuer=issuer, jwks_uri=jwks_uri, client_id=client_id, client_secret=client_secret,
            redirect_uri=redirect_uri(port), upstream_port=upstream_port, audience=audience,
        ))
        self.process = subprocess.Popen([binary(), "-f", str(work / "httpd.conf"), "-DFOREGROUND"],
                                        stdout=subprocess.DEVNULL, stderr=open(work / "stderr.log", "wb"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def errors(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in (self.work / "error.log", self.work / "stderr.log")
                         if path.exists())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: httpd stops its children
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
