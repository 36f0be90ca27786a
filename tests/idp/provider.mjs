// A real OpenID Certified provider (npm `oidc-provider`) on loopback, for
// claimgate's rotation and introspection tests.
//
//   node tests/idp/provider.mjs            (env: IDP_ALG, default ES256)
//
// Env: IDP_ALG (default ES256), IDP_FORMAT (`jwt` default, or `opaque`
// access tokens: introspection, RFC 7662 / RFC 9701, and revocation),
// IDP_CLIENT_JWK (a public JWK: adds the private_key_jwt client
// `claimgate-pkjwt`).
//
// Prints one JSON line {"issuer": "http://127.0.0.1:PORT"} once it listens.
// Clients: `claimgate-test` / `test-secret` (client_credentials, JWT access
// tokens for the resource https://api.test, signed with IDP_ALG).
//
// Test controls, beside the provider's own endpoints:
//   POST /_test/rotate?mode=soft|hard[&alg=ALG]  a new signing key, live: the
//        provider is rebuilt with the new key first (it signs from now on);
//        `soft` keeps publishing the old keys, `hard` drops them.
//        Answers {"kid": NEW_KID}.
//   GET  /_test/stats   {"jwks_fetches": N}: GETs of the JWKS endpoint so far.
import crypto from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

const AUDIENCE = 'https://api.test';
let alg = process.env.IDP_ALG || 'ES256';
// `jwt` (default) or `opaque` access tokens.
const format = process.env.IDP_FORMAT || 'jwt';
// The public JWK of the `claimgate-pkjwt` client, when given.
const clientJwk = process.env.IDP_CLIENT_JWK ? JSON.parse(process.env.IDP_CLIENT_JWK) : null;
let keys = [];
let handler = null;
let jwksFetches = 0;
let issuer = '';

function newKey(a) {
  let pair;
  if (a.startsWith('ES')) {
    const curve = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' }[a];
    pair = crypto.generateKeyPairSync('ec', { namedCurve: curve });
  } else if (a === 'Ed25519' || a === 'EdDSA') {
    pair = crypto.generateKeyPairSync('ed25519');
  } else {
    pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `${a}-${crypto.randomBytes(6).toString('hex')}`, alg: a, use: 'sig' };
}

function build() {
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'claimgate-test',
      client_secret: 'test-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      id_token_signed_response_alg: alg,
      // RFC 9701 answers when asked with Accept: application/token-introspection+jwt.
      introspection_signed_response_alg: alg,
    }, ...(clientJwk ? [{
      // A resource server that authenticates with a signed assertion
      // (RFC 7523, private_key_jwt) at the introspection endpoint.
      client_id: 'claimgate-pkjwt',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'ES256',
      id_token_signed_response_alg: alg,
      introspection_signed_response_alg: alg,
      jwks: { keys: [clientJwk] },
    }] : [])],
    jwks: { keys },
    enabledJWA: {
      idTokenSigningAlgValues: [...new Set(['RS256', 'ES256', 'ES512', 'Ed25519', 'EdDSA', alg])],
      introspectionSigningAlgValues: [...new Set(['RS256', 'ES256', alg])],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      jwtIntrospection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => AUDIENCE,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'orders:read orders:write',
          audience: AUDIENCE,
          accessTokenTTL: 600,
          accessTokenFormat: format,
          jwt: { sign: { alg } },
        }),
      },
    },
  });
  handler = provider.callback();
}

function control(req, res) {
  const url = new URL(req.url, issuer);
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  if (req.method === 'POST' && url.pathname === '/_test/rotate') {
    alg = url.searchParams.get('alg') || alg;
    const key = newKey(alg);
    keys = url.searchParams.get('mode') === 'hard' ? [key] : [key, ...keys];
    build();
    return reply(200, { kid: key.kid });
  }
  if (req.method === 'GET' && url.pathname === '/_test/stats') {
    return reply(200, { jwks_fetches: jwksFetches });
  }
  return reply(404, { error: 'no such test control' });
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/_test/')) return control(req, res);
  if (req.method === 'GET' && req.url.split('?')[0] === '/jwks') jwksFetches += 1;
  return handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  keys = [newKey(alg)];
  build();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The test harness closes stdin when it drops the process handle.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
