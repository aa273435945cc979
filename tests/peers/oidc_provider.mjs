// A real OpenID provider for tests: panva's oidc-provider (OpenID-certified), on 127.0.0.1.
//   node tests/peers/oidc_provider.mjs PORT CONFIG_JSON
// CONFIG_JSON: {"clients": [...], "accessTokenTtl": 3600, "rotateRefreshToken": false}
// Prints "ready <issuer>" once listening, and one "event <name> <detail>" line per
// token-endpoint grant, so tests can count what reached the provider.
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const options = JSON.parse(process.argv[3] || '{}');
const issuer = `http://127.0.0.1:${port}`;

const accounts = {
  alice: { email: 'alice@example.com', name: 'Alice', groups: ['admins'] },
  bob: { email: 'bob@example.com', name: 'Bob', groups: [] },
};

const provider = new Provider(issuer, {
  clients: options.clients || [],
  features: {
    devInteractions: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true },
  conformIdTokenClaims: false, // scope claims in the ID token, as Cognito does
  claims: { openid: ['sub'], email: ['email'], profile: ['name'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  issueRefreshToken: async () => true,
  rotateRefreshToken: Boolean(options.rotateRefreshToken),
  ttl: { AccessToken: options.accessTokenTtl || 3600, IdToken: options.idTokenTtl || 3600 },
  cookies: { keys: ['authproxy-test-cookie-key'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, ...(accounts[id] || { email: `${id}@example.com`, name: id, groups: [] }) }),
  }),
});
provider.proxy = false;

provider.on('grant.success', (ctx) => {
  process.stdout.write(`event grant.success ${ctx.oidc.params.grant_type}\n`);
});
// Opaque tokens' values are their jti: printed so tests can look for them where they must not be.
provider.on('access_token.saved', (token) => process.stdout.write(`token access ${token.jti}\n`));
provider.on('refresh_token.saved', (token) => process.stdout.write(`token refresh ${token.jti}\n`));
provider.on('refresh_token.destroyed', () => {
  process.stdout.write('event refresh_token.destroyed\n'); // revoked (RFC 7009) or rotated
});
provider.on('grant.error', (ctx, err) => {
  process.stdout.write(`event grant.error ${ctx.oidc.params && ctx.oidc.params.grant_type} ${err.error || err.message}\n`);
});

http.createServer(provider.callback()).listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});
