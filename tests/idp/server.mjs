// A real OpenID Provider (panva's `oidc-provider`) for Portcullis' integration tests (tests/oidc.rs).
//
// Listens on a free loopback port and prints one line `ready http://127.0.0.1:PORT` on stdout; the
// issuer is that URL. It serves discovery, JWKS, the token endpoint (client credentials grant),
// introspection and revocation. Access tokens are RS256 JWTs for the resource `urn:portcullis:orders`
// (audience `orders-api`) and opaque for `urn:portcullis:opaque` (audience `opaque-api`).
//
// Test-only admin endpoints (never part of a real provider) under /__admin/:
//   POST /__admin/rotate   new signing key first, previous keys still published
//   POST /__admin/retire   publish only the newest key
//   POST /__admin/down     answer 503 to every OIDC request; POST /__admin/up undoes it
//   GET  /__admin/stats    {"jwks": n, "discovery": n, "introspection": n, "kids": [...]}
// Keys and opaque tokens survive a rotation: the provider is rebuilt with the new key set, and the
// in-memory adapter's store is shared by every provider instance in the process.

import http from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const RESOURCES = {
  'urn:portcullis:orders': {
    scope: 'orders:read orders:write',
    audience: 'orders-api',
    accessTokenFormat: 'jwt',
    accessTokenTTL: 600,
    jwt: { sign: { alg: 'RS256' } },
  },
  'urn:portcullis:opaque': {
    scope: 'orders:read orders:write',
    audience: 'opaque-api',
    accessTokenFormat: 'opaque',
    accessTokenTTL: 600,
  },
};

const CLIENTS = [
  // The application that asks for tokens.
  { client_id: 'app', client_secret: 'app-secret-0123456789', token_endpoint_auth_method: 'client_secret_basic' },
  // The gateway, introspecting with HTTP Basic or with credentials in the form body.
  { client_id: 'gateway', client_secret: 'gateway-secret-0123456789', token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'gateway-post', client_secret: 'gateway-post-secret-0123', token_endpoint_auth_method: 'client_secret_post' },
].map((c) => ({ ...c, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] }));

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `rsa-${randomUUID()}`, alg: 'RS256', use: 'sig' };
}

const stats = { jwks: 0, discovery: 0, introspection: 0 };
let keys = [newKey()];
let down = false;
let issuer;
let handler;

function build() {
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    jwks: { keys },
    cookies: { keys: ['test-only-cookie-key-0123456789'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // DPoP (RFC 9449): a token request with a `DPoP` proof gets a token bound to its key (`cnf.jkt`);
      // on by default in oidc-provider 9, said here because tests/dpop.rs depends on it.
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => 'urn:portcullis:orders',
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          const info = RESOURCES[resource];
          if (!info) throw new errors.InvalidTarget();
          return info;
        },
      },
    },
    // A nested roles claim, as Keycloak puts it, for the gateway's `roles_claim: realm_access.roles`.
    extraTokenClaims: async () => ({ realm_access: { roles: ['reader', 'auditor'] } }),
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? 600,
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider.callback();
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (path.startsWith('/__admin/')) {
    const action = path.slice('/__admin/'.length);
    if (action === 'stats') return json(res, 200, { ...stats, kids: keys.map((k) => k.kid) });
    if (req.method !== 'POST') return json(res, 405, {});
    if (action === 'rotate') {
      keys = [newKey(), ...keys];
      handler = build();
      return json(res, 200, { kid: keys[0].kid });
    }
    if (action === 'retire') {
      keys = [keys[0]];
      handler = build();
      return json(res, 200, { kid: keys[0].kid });
    }
    if (action === 'down' || action === 'up') {
      down = action === 'down';
      return json(res, 200, { down });
    }
    return json(res, 404, {});
  }
  if (path === '/jwks') stats.jwks += 1;
  if (path === '/.well-known/openid-configuration') stats.discovery += 1;
  if (path === '/token/introspection') stats.introspection += 1;
  if (down) return json(res, 503, { error: 'temporarily_unavailable' });
  return handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  handler = build();
  console.log(`ready ${issuer}`);
});

// The test harness closes our stdin (or dies): stop with it, never outlive the test.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
