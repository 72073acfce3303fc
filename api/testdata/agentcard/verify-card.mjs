// verify-card.mjs — checks A2A agent cards signed by ATR with @a2a-js/sdk's
// own verifier (verifyAgentCardSignature), the way an A2A relying party
// would: the public key comes from ATR's JWKS, looked up by the signature's
// kid (never from a URL in the card).
//
//   node verify-card.mjs SDK_DIR JWKS_FILE CARD_FILE...
//
// SDK_DIR is where scripts/install-a2a-sdk.sh installed the SDK. For each
// card it prints one JSON line: {"card", "ok", "error"?, "canonical"}, where
// canonical is the SDK's canonicalizeAgentCard of the card (the JWS payload
// the SDK verifies against). Exit status 0 unless the script itself fails.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [sdkDir, jwksFile, ...cards] = process.argv.slice(2);
if (!sdkDir || !jwksFile || cards.length === 0) {
  console.error('usage: node verify-card.mjs SDK_DIR JWKS_FILE CARD_FILE...');
  process.exit(2);
}
const modules = join(sdkDir, 'node_modules');
const sdk = await import(pathToFileURL(join(modules, '@a2a-js/sdk/dist/index.js')).href);
const jose = await import(pathToFileURL(join(modules, 'jose/dist/webapi/index.js')).href);
console.debug = () => {}; // the SDK logs each failed entry at debug level

const jwks = JSON.parse(readFileSync(jwksFile, 'utf8'));
const verify = sdk.verifyAgentCardSignature(async (kid, jku) => {
  const jwk = (jwks.keys ?? []).find((k) => k.kid === kid);
  if (!jwk) throw new Error(`kid ${kid} is not in the JWKS`);
  return jose.importJWK(jwk, 'ES256');
});

for (const file of cards) {
  const out = { card: file, ok: false };
  try {
    const card = JSON.parse(readFileSync(file, 'utf8'));
    out.canonical = sdk.canonicalizeAgentCard(card);
    await verify(card);
    out.ok = true;
  } catch (e) {
    out.error = String(e?.message ?? e);
  }
  console.log(JSON.stringify(out));
}
