// Package ca is ATR's certificate policy, built over any crypto.Signer.
//
// It knows nothing of HTTP, SQL or PKCS#11: the signer may be a key on a
// token (package hsm) or, in tests, a software key. Everything that goes into
// or comes out of a certificate passes through here:
//
//   - Names. NormalizeAgentName turns a requested agent name into its one
//     canonical form (NFC, lowercase, DNS-label rules, ASCII only) or refuses
//     it with a *PolicyError. AgentURI builds the SPIFFE ID
//     spiffe://<trust-domain>/agent/<name>; AgentName reads it back from a
//     certificate, requiring exactly one URI SAN in the trust domain.
//
//   - Untrusted input. ParseCSR and ParseCertificatesPEM are strict (one PEM
//     block of the expected type, no headers, nothing but whitespace around,
//     size and count caps). ParseCSR checks the CSR's self-signature (proof of
//     possession) and the key policy of CheckPublicKey: ECDSA P-256/P-384,
//     Ed25519, RSA 2048/3072/4096 with exponent 65537. Refusals are
//     *PolicyError values, which callers map to "400 invalid request". What
//     it accepts is a *CSR, the only input Prepare takes, so Prepare does not
//     check the self-signature again.
//
//   - Issuance. An Issuer holds the issuing certificate, its signer and a
//     leaf Profile. Prepare builds the leaf template from the profile alone (a
//     CSR contributes only its public key: never its subject or extensions),
//     signs it with a throwaway "lint issuer" key that has the same algorithm,
//     subject and key identifier as the real issuer, and lints the result with
//     zlint and ATR's own agent lints (see lint.go for the exact lint
//     selection, and smallkey.go for zlint's small-private-key lint, which
//     ATR runs as a table lookup for P-256 keys). Because the lint issuer mirrors the real one, the lint
//     certificate's TBSCertificate is the one the real signer signs;
//     Prepared.TBS returns it so that the caller can record it durably before
//     the real signature. Sign then has the issuer signer sign exactly those
//     bytes (no second encoding: what was linted and recorded is what is
//     signed) and returns the certificate only once the signature verified
//     under the issuing key — checked by the signer itself when it is a
//     SelfCheckingSigner (hsm.Signer), by Sign otherwise.
//
//   - Leaf profile (SPIFFE X.509-SVID compatible): empty subject, exactly one
//     URI SAN (marked critical, as RFC 5280 requires for an empty subject; Go
//     does this automatically), cA=false, KeyUsage digitalSignature only
//     (critical), EKU clientAuth (+ serverAuth when Profile.ServerAuth),
//     SubjectKeyId, AuthorityKeyId, CRL distribution point and OCSP AIA from
//     the profile, 128-bit random serial, default lifetime 24 h (at most
//     30 days), backdated 30 s by default (at most 1 minute).
//
//   - Ceremony certificates. RootTemplate, IntermediateTemplateWithOptions
//     (pathLen 0, lifetime at most 2 years, and optionally critical name
//     constraints limiting URI SANs to the trust domain, which
//     pyca/cryptography rejects; IntermediateTemplate always adds them).
//     CreateRoot and CreateIntermediate sign them through the same path as
//     leaves (cacert.go): a throwaway-key signature of the exact TBS, zlint
//     and ATR's root or issuing CA lints, then the real signature over the
//     root key's crypto.Signer, refused unless its TBS is the linted one
//     and its signature verifies. CreateCertificate signs without linting,
//     for tests and fixtures only. The registry's own TLS certificate is not
//     a ceremony: it goes through Issuer.PrepareServer and Issuer.Sign like
//     an agent leaf (ServerTemplate remains for tests).
//
//   - Choosing CAs from a token's certificates (selection.go), as pure
//     functions over []*x509.Certificate and a KeyFinder that reports the
//     keys present: SplitCAs (self-signed roots and intermediates, newest
//     first), SelectRoot (the ceremony root), SelectIssuing (the newest
//     intermediate valid now, issued by a root valid now, with its key) and
//     PreviousIssuing (the earlier ones that still answer CRL and OCSP);
//     IsSelfSigned, SamePublicKey, Fingerprint, PublicKeyFingerprint and
//     Bundle (the published CA bundle) are the helpers they share with
//     callers.
//
//   - Revocation. A Responder signs the CRLs and OCSP responses of one CA
//     (Issuer.Responder for the issuing CA, NewResponder for an earlier
//     intermediate or for the root's CRL of intermediates, which NextCRL
//     extends); Issuer.SignCRL
//     and Issuer.SignOCSP sign with the issuing key; ReasonCode and ReasonName map RFC 5280
//     reason names (certificateHold and removeFromCRL are refused: revocation
//     in ATR is terminal).
//
//   - Verification. A Verifier builds chains cryptographically with
//     x509.Certificate.Verify to the roots it was given (from the token) —
//     never by comparing subject or issuer names — and reports failures as a
//     *VerifyError with a stable Reason.
//
//   - JWT-SVIDs (jwtsvid.go). A JWTSigner signs SPIFFE JWT-SVIDs (ES256,
//     through go-jose over the crypto.Signer of a key on the token): kid the
//     RFC 7638 thumbprint (JWKThumbprint), sub a SPIFFE ID, aud 1 to 8 values
//     (CheckJWTAudience), iat, exp at most 5 minutes later and never after the
//     certificate's NotAfter (CheckJWTSVIDLifetime), a 128-bit jti; the token
//     is parsed and its signature checked after signing. NewJWK is the public
//     JWK the JWKS and the SPIFFE bundle publish.
//
// Nothing in this package holds mutable package-level state; an Issuer and a
// Verifier are safe for concurrent use.
package ca
