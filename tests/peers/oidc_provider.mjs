// A real OpenID provider for tests: panva's oidc-provider (OpenID-certified), on 127.0.0.1.
//   node tests/peers/oidc_provider.mjs PORT CONFIG_JSON
// CONFIG_JSON: {
//   "clients": [...],            oidc-provider client metadata; a client may also carry
//                                "resource_scopes": {"<resource>": "<scopes>"}: the only resources
//                                (and, per resource, the only scopes) it may get tokens for
//                                (stripped before oidc-provider sees it; absent = any resource)
//   "accessTokenTtl": 3600,      opaque access tokens (and JWT ones whose resource sets no TTL)
//   "idTokenTtl": 3600,
//   "rotateRefreshToken": false,
//   "resources": {               resource servers (RFC 8707 resource indicators): asking for one
//     "https://api.example.test": {           (`resource` at /auth and /token, or with
//       "scope": "orders/read orders/write",   client_credentials) gets an RFC 9068 JWT access
//       "accessTokenTTL": 600,                 token (typ at+jwt, aud = the resource, `scope`,
//       "alg": "RS256" | "ES256",              plus the user's email and groups), signed with a
//       "accessTokenFormat": "jwt"             key published at /jwks. Default alg RS256,
//     }},                                      default format jwt.
//   "useGrantedResource": false  true: a code exchanged without `resource` still gets a JWT for the
//                                resource asked for at /auth (oidc-provider's default is an opaque
//                                token for /me when the scope has openid)
//   "backchannelLogout": false,  true: OpenID Connect Back-Channel Logout 1.0 (a client registers
//                                backchannel_logout_uri, and backchannel_logout_session_required for
//                                a sid in ID and logout tokens); each logout token sent is printed as
//                                "logout_token <value>", each delivery as "event backchannel.success"
//                                or "event backchannel.error"
//   "jwks": {"keys": [...]}      the provider's private signing keys (default: its development key),
//                                so a test can sign tokens exactly as the provider would
// }
// Without a `resource` parameter nothing changes: access tokens are opaque, as before.
// The client_credentials grant is enabled when a client has that grant type.
// Prints "ready <issuer>" once listening, and one "event <name> <detail>" line per
// token-endpoint grant, so tests can count what reached the provider; "token access|refresh <value>"
// for every opaque access and refresh token issued (JWT access tokens print nothing: not stored).
import * as crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2]);
const options = JSON.parse(process.argv[3] || '{}');
// options.tls = {cert, key} (PEM file paths): serve HTTPS, for tests of oidc.ca_file and proxies.
const issuer = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`;

const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['admins'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: [] },
};
// Any other login is a user whose address nobody verified (email_verified false), as a
// federated or self-written email would be.
const accountClaims = (id) => ({
  sub: id, ...(accounts[id] || { email: `${id}@example.com`, email_verified: false, name: id, groups: [] }),
});

// Per-client resource allow-lists, kept out of the metadata oidc-provider validates.
const clientResourceScopes = new Map();
const clients = (options.clients || []).map(({ resource_scopes: allowed, ...client }) => {
  if (allowed) clientResourceScopes.set(client.client_id, allowed);
  return client;
});
const resources = options.resources || {};
const machineClients = clients.some((client) => (client.grant_types || []).includes('client_credentials'));

// The development keystore has one RSA key; a resource that signs with ES256 needs an EC key, so
// then the provider gets its own keys (RSA for ID tokens, EC P-256), all published at /jwks.
const algs = new Set(Object.values(resources).map((resource) => resource.alg || 'RS256'));
let jwks = options.jwks;
if (!jwks && [...algs].some((alg) => alg !== 'RS256')) {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  jwks = { keys: [{ ...rsa, use: 'sig', alg: 'RS256', kid: 'rsa-1' }, { ...ec, use: 'sig', alg: 'ES256', kid: 'ec-1' }] };
}

async function getResourceServerInfo(ctx, indicator, client) {
  const resource = resources[indicator];
  if (!resource) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
  let scope = resource.scope || '';
  const allowed = clientResourceScopes.get(client.clientId);
  if (allowed) {
    if (!(indicator in allowed)) throw new errors.InvalidTarget(`client may not ask for ${indicator}`);
    const allowedScopes = new Set(allowed[indicator].split(' '));
    scope = scope.split(' ').filter((value) => allowedScopes.has(value)).join(' ');
  }
  return {
    scope,
    accessTokenFormat: resource.accessTokenFormat || 'jwt',
    ...(resource.accessTokenTTL ? { accessTokenTTL: resource.accessTokenTTL } : {}),
    ...(resource.alg ? { jwt: { sign: { alg: resource.alg } } } : {}),
  };
}

const provider = new Provider(issuer, {
  clients,
  ...(jwks ? { jwks } : {}),
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: Boolean(options.backchannelLogout) },
    clientCredentials: { enabled: machineClients },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo,
      useGrantedResource: async () => Boolean(options.useGrantedResource),
    },
  },
  pkce: { required: () => true },
  conformIdTokenClaims: false, // scope claims in the ID token, as Cognito does
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  issueRefreshToken: async () => true,
  rotateRefreshToken: Boolean(options.rotateRefreshToken),
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || options.accessTokenTtl || 3600,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || 600,
    IdToken: options.idTokenTtl || 3600,
  },
  // The user's email and groups in JWT access tokens, so a bearer route can read them from the
  // token itself. Opaque tokens stay as they were (nothing extra).
  extraTokenClaims: async (ctx, token) => {
    if (token.format !== 'jwt' || !token.accountId) return undefined;
    const { email, email_verified, groups } = accountClaims(token.accountId);
    return { email, email_verified, groups };
  },
  cookies: { keys: ['authproxy-test-cookie-key'] },
  // Its outgoing requests refuse loopback addresses (SSRF protection: a dispatcher that drops
  // such sockets); a back-channel logout here goes to an authproxy on 127.0.0.1 by design.
  ...(options.backchannelLogout ? {
    fetch: (url, { dispatcher, ...init }) => globalThis.fetch(url, init),
  } : {}),
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => accountClaims(id),
  }),
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  process.stdout.write(`event grant.success ${ctx.oidc.params.grant_type}\n`);
});
// Opaque tokens' values are their jti: printed so tests can look for them where they must not be.
// (JWT access tokens are not stored: oidc-provider emits access_token.issued for them, not .saved.)
provider.on('access_token.saved', (token) => process.stdout.write(`token access ${token.jti}\n`));
provider.on('refresh_token.saved', (token) => process.stdout.write(`token refresh ${token.jti}\n`));
provider.on('refresh_token.destroyed', () => {
  process.stdout.write('event refresh_token.destroyed\n'); // revoked (RFC 7009) or rotated
});
if (options.backchannelLogout) {
  // The logout tokens themselves, for tests that replay one; IdToken.issue signs them too.
  const { issue } = provider.IdToken.prototype;
  provider.IdToken.prototype.issue = async function issueAndPrint(...args) {
    const token = await issue.apply(this, args);
    if (args[0] && args[0].use === 'logout') process.stdout.write(`logout_token ${token}\n`);
    return token;
  };
  provider.on('backchannel.success', () => process.stdout.write('event backchannel.success\n'));
  provider.on('backchannel.error', (ctx, err) => {
    process.stdout.write(`event backchannel.error ${err.response ? err.response.status : err.message}\n`);
  });
}
provider.on('grant.error', (ctx, err) => {
  process.stdout.write(`event grant.error ${ctx.oidc.params && ctx.oidc.params.grant_type} ${err.error || err.message}\n`);
});

const server = options.tls
  ? https.createServer({ cert: fs.readFileSync(options.tls.cert), key: fs.readFileSync(options.tls.key) }, provider.callback())
  : http.createServer(provider.callback());
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
