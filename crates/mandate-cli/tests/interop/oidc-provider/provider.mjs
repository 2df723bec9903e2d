// A real OpenID provider (panva/oidc-provider, OpenID certified) on
// loopback for the tests: an RS256 key, one confidential client `gateway-1`
// allowed the client-credentials grant, whose access tokens are JWTs
// (RFC 9068) for the Mandate API (`aud` api://mandate) carrying the role
// and tenant the authority maps. One line on stdout per token issued.
//
// A second client, `gateway-2`, authenticates with a signed assertion
// (private_key_jwt) by the public JWK given as the fourth argument.
//
// usage: node provider.mjs PORT CLIENT_SECRET TOKEN_TTL_SECS [PUBLIC_JWK]
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, secret, ttl, clientJwk] = process.argv.slice(2);
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'op-rsa-1', use: 'sig', alg: 'RS256' };
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'gateway-1',
    client_secret: secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'mandate',
    token_endpoint_auth_method: 'client_secret_basic',
  }, ...(clientJwk ? [{
    client_id: 'gateway-2',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'mandate',
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [JSON.parse(clientJwk)] },
  }] : [])],
  jwks: { keys: [jwk] },
  scopes: ['openid', 'mandate'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'api://mandate',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'mandate',
        audience: 'api://mandate',
        accessTokenTTL: Number(ttl),
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (_ctx, token) => (token.kind === 'ClientCredentials'
    ? { role: 'enforcer', tenant: 'acme' }
    : undefined),
});
provider.on('grant.success', () => console.log('token issued'));
provider.on('grant.error', (_ctx, err) => console.log(`grant error: ${err.message}`));
provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
