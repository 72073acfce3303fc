// Package agent is what a Go agent embeds to hold an identity issued by the
// Agent Trust Registry (ATR) and keep it current. `atr agent …` is built on
// it; a Go program needs neither the binary nor a sidecar.
//
// # Identity in memory: Source
//
// A Source holds the agent's private key, certificate and chain, renews the
// certificate in the background over mutual TLS with the registry
// (POST /v1/agents/{name}/rotate, authenticated by the current certificate,
// with a fresh key each time) at about 2/3 of its lifetime, and serves it to
// crypto/tls. Renewal never drops a connection: established connections keep
// their certificate, new handshakes get the new one.
//
//	src, err := agent.NewSource(ctx, agent.Config{
//		Server:   "https://atr.example.org:8443",
//		KeyFile:  "agent.key", CertFile: "agent.pem", // from `atr agent register`
//	})
//	defer src.Close()
//	srv := &http.Server{TLSConfig: src.ServerTLSConfig(agent.AuthorizeNames("billing-bot.acme"))}
//	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: src.ClientTLSConfig(agent.AuthorizeNames("ledger.acme"))}}
//
// Peers are verified against the ATR trust bundle (fetched from the registry
// unless Config.Bundle is given) with ca.Verifier: a genuine agent
// certificate of the same trust domain, valid now; then an Authorizer
// decides by agent name. GetCertificate and GetClientCertificate are the
// bare tls.Config hooks, Roots the trust pool, VerifyPeer the check itself.
//
// An agent may also start without files: Register builds a CSR over a key
// that stays in the process and registers it with an owner's API key; the
// Identity it returns is given to the Source as Config.Identity, and renewals
// then live in memory only.
//
// # Files: Renewer
//
// With KeyFile and CertFile, the Source persists every renewal; Renewer does
// the same without holding anything in memory (`atr agent renew`). The files
// are:
//
//	KEY            private key, PKCS#8 PEM, mode 0600
//	CERT           the agent's certificate, PEM, leaf only
//	CHAIN          the intermediates; ChainPath: CERT with ".pem" replaced by
//	               ".chain.pem" (agent.pem → agent.chain.pem)
//	RECEIPT        the certificate's transparency-log receipt; ReceiptPath:
//	               CERT with ".pem" replaced by ".receipt.json"
//	KEY.next       the staged key of a renewal in progress (StagedSuffix)
//
// Every file is written by WriteFile: a temporary file in the same
// directory, fsync, rename (or link, to refuse overwriting), fsync of the
// directory, so no reader ever sees a half-written key or certificate and a
// write that returned survives a crash. Renewer.RenewOnce replaces them in an
// order that never leaves a certificate without its key on disk, and
// Renewer.Recover repairs an interrupted renewal.
//
// # Schedule
//
// RenewalDelay places a renewal at 2/3 of the lifetime ±10% of it (or
// RenewBefore the expiry), so that a fleet does not renew at once; failures
// that may pass (Retryable: transport errors, 408, 409, 429, 5xx) are
// retried with exponential backoff from RetryInitial, honouring
// Retry-After; a refusal (a revoked or superseded certificate: ServerError
// says which) stops the renewals.
//
// # JWT-SVIDs
//
// Source.JWTSVID returns a JWT-SVID of the agent for an audience, for
// services that take bearer tokens: fetched over mTLS with the current
// certificate (POST /v1/agents/{name}/jwt-svid; FetchJWTSVID without a
// Source, as `atr agent token` does), checked (the agent's SPIFFE ID, the
// audience asked for, not expired) and cached per audience until half of its
// lifetime (at most 5 minutes) has passed.
//
// # Keys
//
// GenerateKey makes ECDSA P-256 (the default) or P-384, Ed25519 or RSA-3072
// keys; MarshalKey, ParseKey and LoadKey read and write them as PEM; ParseKey
// applies the registry's key policy. NewCSR builds the request the registry
// needs (no subject, no SANs: the registry's profile decides the names).
// Fingerprint and SPKIFingerprint are the SHA-256 fingerprints the registry
// and `atr` print.
//
// The package imports only api/client and ca of ATR, and the standard
// library.
package agent
