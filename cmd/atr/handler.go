package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// newStdLogger adapts logrus for http.Server.ErrorLog.
func newStdLogger(e *logrus.Entry) *log.Logger {
	return log.New(e.WriterLevel(logrus.InfoLevel), "", 0)
}

// buildHandler wires the CA, the registry and the API over the open online
// token. It returns the registry too (serve has it issue the server's TLS
// certificate). The returned func releases what it opened (database, Redis).
func buildHandler(ctx context.Context, cfg Config, tok *hsm.Token, m *caMaterial, now func() time.Time, log *logrus.Entry) (*api.Server, *registry.Registry, func(), error) {
	// Step 1: the CA. NewIssuer self-tests one issuance through the lint path.
	// The CRL and OCSP URLs are the http distribution listener's when it is on.
	hsmm := hsm.NewMetrics()
	// Each leaf's CRL distribution point names its own issuer's CRL, so it
	// stays right after the intermediate is rotated. Config.Validate judged
	// this profile and the API's config with the same functions.
	issuer, err := ca.NewIssuer(hsmm.Signer("issuing", m.signer), m.issuing.Cert, m.chain, cfg.leafProfile(ca.KeyID(m.issuing.Cert)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("building the issuer: %w", err)
	}
	var responders []*ca.Responder
	for _, p := range m.previous {
		r, err := ca.NewResponder(hsmm.Signer("issuing", p.signer), p.cert)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("earlier intermediate %s: %w", p.cert.Subject, err)
		}
		responders = append(responders, r)
	}
	verifier, err := ca.NewVerifier(m.roots, m.intermediates, cfg.TrustDomain)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("building the verifier: %w", err)
	}

	// Step 2: the transparency-log key, which must exist at start-up.
	logURI, err := hsm.ParseURI(cfg.LogKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log key: %w", err)
	}
	if logURI.Token == "" {
		logURI.Token = cfg.PKCS11Token
	}
	logKey, err := tok.Signer(ctx, logURI)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log key %s: %w (run scripts/ceremony or 'atr ceremony log-key')", logURI, err)
	}
	if err := tok.CheckKeyPolicy(ctx, logKey); err != nil {
		return nil, nil, nil, fmt.Errorf("log key: %w", err)
	}
	origin := cfg.TrustDomain + "/log"
	noteSigner, err := translog.NewNoteSigner(origin, hsmm.Signer("log", logKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log key: %w", err)
	}
	noteVerifier, err := translog.NewNoteVerifier(origin, logKey.Public())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("log key: %w", err)
	}
	// The log's Ed25519 key for witnesses (witness.go).
	logEdSigner, logEdPub, err := loadLogKeyEd25519(ctx, cfg, tok, hsmm, origin, log)
	if err != nil {
		return nil, nil, nil, err
	}
	// The name-index VRF key, which must exist at start-up too.
	vrfURI, err := hsm.ParseURI(cfg.VRFKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("VRF key: %w", err)
	}
	if vrfURI.Token == "" {
		vrfURI.Token = cfg.PKCS11Token
	}
	vrfKey, err := tok.Signer(ctx, vrfURI)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("VRF key %s: %w (run scripts/ceremony/vrf-key.sh or 'atr ceremony vrf-key')", vrfURI, err)
	}
	if _, err := translog.CheckVRFKey(vrfKey.Public()); err != nil {
		return nil, nil, nil, fmt.Errorf("VRF key %s: %w", vrfURI, err)
	}
	// Its secrecy is what keeps names unguessable: sensitive, never extractable.
	if err := tok.CheckKeyPolicy(ctx, vrfKey); err != nil {
		return nil, nil, nil, fmt.Errorf("VRF key: %w", err)
	}

	// The JWT-SVID and agent-card keys (optional: a missing default key
	// turns the feature off with a warning; a key named explicitly must exist).
	jwtKey, err := optionalES256Key(ctx, tok, cfg.JWTKey, cfg.PKCS11Token, defaultJWTKeyLabel, "JWT-SVID key", "atr ceremony jwt-key", log)
	if err != nil {
		return nil, nil, nil, err
	}
	var jwtPrevious []crypto.PublicKey
	for _, u := range cfg.JWTPreviousKeys {
		k, err := optionalES256Key(ctx, tok, u, cfg.PKCS11Token, "", "previous JWT-SVID key", "", log)
		if err != nil {
			return nil, nil, nil, err
		}
		jwtPrevious = append(jwtPrevious, k.Public())
	}
	cardKey, err := optionalES256Key(ctx, tok, cfg.CardKey, cfg.PKCS11Token, defaultCardKeyLabel, "agent-card key", "atr ceremony card-key", log)
	if err != nil {
		return nil, nil, nil, err
	}
	// One key, one role: a key signing log checkpoints, JWT-SVIDs or agent
	// cards must not be any other of them (a card key among the JWT
	// authorities, say, would let a card signature pass for a token).
	type keyRole struct {
		what string
		pub  crypto.PublicKey
	}
	roles := []keyRole{{"the log key", logKey.Public()}}
	if jwtKey != nil {
		roles = append(roles, keyRole{"the JWT-SVID key", jwtKey.Public()})
	}
	for i, p := range jwtPrevious {
		roles = append(roles, keyRole{fmt.Sprintf("previous JWT-SVID key %d", i+1), p})
	}
	if cardKey != nil {
		roles = append(roles, keyRole{"the agent-card key", cardKey.Public()})
	}
	for i := range roles {
		for j := i + 1; j < len(roles); j++ {
			if ca.SamePublicKey(roles[i].pub, roles[j].pub) {
				return nil, nil, nil, fmt.Errorf("%s and %s are the same key; give each role its own key (atr ceremony jwt-key / card-key)", roles[i].what, roles[j].what)
			}
		}
	}

	// Step 3: the database, migrated, and the registry; settle issuances a
	// crash left pending before taking requests.
	store, err := registry.Open(ctx, cfg.DatabaseURL, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening the database: %w", err)
	}
	closers := []func(){func() { store.Close() }}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*api.Server, *registry.Registry, func(), error) {
		closeAll()
		return nil, nil, nil, err
	}
	if n, err := store.Migrate(ctx); err != nil {
		return fail(fmt.Errorf("migrating the database: %w", err))
	} else if n > 0 {
		log.WithField("applied", n).Info("database migrated")
	}
	reg, err := registry.New(withLogEd25519(registry.Config{
		Store:           store,
		Issuer:          issuer,
		Responders:      responders,
		Verifier:        verifier,
		TrustDomain:     cfg.TrustDomain,
		RotationGrace:   cfg.RotationGrace,
		PendingTimeout:  cfg.PendingTimeout,
		LogSigner:       noteSigner,
		LogVerifier:     noteVerifier,
		LogOrigin:       origin,
		LogPublicKey:    logKey.Public(),
		VRFSigner:       hsmm.Signer("vrf", vrfKey),
		JWTSigner:       instrumentOptional(hsmm, "jwt", jwtKey),
		JWTPreviousKeys: jwtPrevious,
		CardSigner:      instrumentOptional(hsmm, "card", cardKey),
		Token:           tok,
		Now:             now,
		Log:             log,
	}, logEdSigner, logEdPub))
	if err != nil {
		return fail(fmt.Errorf("building the registry: %w", err))
	}
	if n, err := reg.BackfillIssuers(ctx); err != nil {
		return fail(fmt.Errorf("recording the issuers of earlier certificates: %w", err))
	} else if n > 0 {
		log.WithField("certificates", n).Info("recorded the issuing CA of certificates issued before the upgrade")
	}
	if n, err := reg.Reconcile(ctx); err != nil {
		return fail(fmt.Errorf("reconciling pending issuances: %w", err))
	} else if n > 0 {
		log.WithField("reconciled", n).Warn("reconciled issuances left pending by a crash")
	}

	// Step 4: the API.
	// Every CA certificate the server trusts or issues under is in the log
	// once (the ceremonies, an intermediate rotation included).
	if n, err := reg.RecordCACertificates(ctx, append(append([]*x509.Certificate{}, m.roots...), m.intermediates...)); err != nil {
		return fail(fmt.Errorf("recording the CA certificates in the transparency log: %w", err))
	} else if n > 0 {
		log.WithField("recorded", n).Info("new CA certificates recorded in the transparency log")
	}
	// Change notification (the log growing, revocations, on any replica):
	// what GET /v1/log/events waits on. It stops with ctx, so open event
	// streams end when serve shuts down.
	if err := reg.Start(ctx); err != nil {
		return fail(fmt.Errorf("starting change notification: %w", err))
	}
	closers = append(closers, func() { reg.Close() })
	go maintain(ctx, reg, log.WithField("component", "maintenance"))
	deps := api.Deps{Lifecycle: reg, Auth: reg, Admin: reg, Log: reg, Revocation: reg, Now: now,
		Collectors: append(append(append(hsmm.Collectors(), hsm.HealthGauge(tok.Healthy)), store.Collectors()...), reg.Collectors()...)}
	// Witnesses cosign checkpoints in the background; never in a request.
	witnessCollectors, err := startWitnesses(ctx, cfg, reg, log)
	if err != nil {
		return fail(fmt.Errorf("witnesses: %w", err))
	}
	deps.Collectors = append(deps.Collectors, witnessCollectors...)
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return fail(fmt.Errorf("ATR_REDIS_URL: not a valid redis:// URL"))
		}
		client := redis.NewClient(opts)
		closers = append(closers, func() { client.Close() })
		deps.Limiter = ratelimit.NewRedis(client, "atr:ratelimit:")
		log.WithField("redis", opts.Addr).Info("rate limits shared through Redis")
	}
	apiCfg, err := cfg.apiConfig()
	if err != nil {
		return fail(err)
	}
	srv, err := api.New(apiCfg, deps, log)
	if err != nil {
		return fail(fmt.Errorf("building the API: %w", err))
	}
	return srv, reg, closeAll, nil
}

// maintenanceInterval is how often serve settles stale pending issuances and
// renews the CRL and stored OCSP responses when nobody asked for them.
const maintenanceInterval = 30 * time.Second

// maintain runs the registry's periodic work until ctx ends: Reconcile (a
// replica that crashed mid-issuance leaves pending rows other replicas
// settle), RefreshRevocation (CRL before 2/3 of its validity, OCSP clean-up)
// PruneSupersededChanges (what the caches of other replicas no longer need),
// PrunePendingIssuances (the record-before-sign rows of issuances stored
// more than registry.PendingIssuedKeep ago) and PruneCheckpoints (the log's
// checkpoints, registry.CheckpointKeep after they were signed, but the
// newest and the newest cosigned).
func maintain(ctx context.Context, reg *registry.Registry, log *logrus.Entry) {
	t := time.NewTicker(maintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := reg.Reconcile(ctx); err != nil {
			log.WithError(err).Warn("reconciling pending issuances")
		} else if n > 0 {
			log.WithField("reconciled", n).Warn("reconciled stale pending issuances")
		}
		if _, err := reg.BackfillIssuers(ctx); err != nil {
			log.WithError(err).Warn("recording the issuers of certificates written by older replicas")
		}
		if err := reg.RefreshRevocation(ctx); err != nil {
			log.WithError(err).Warn("refreshing CRL and OCSP responses")
		}
		if _, err := reg.PruneSupersededChanges(ctx); err != nil {
			log.WithError(err).Warn("pruning the record of superseded certificates")
		}
		if _, err := reg.PrunePendingIssuances(ctx); err != nil {
			log.WithError(err).Warn("pruning the records of issued certificates' pending issuances")
		}
		if _, err := reg.PruneCheckpoints(ctx); err != nil {
			log.WithError(err).Warn("pruning the log's old checkpoints")
		}
	}
}

// optionalES256Key opens the ECDSA P-256 key uri names on the online token
// and checks its attributes (sensitive, never extractable, sign-only). When
// the key is missing and uri names the default label, it returns nil and
// logs how to create it; any other missing key is an error.
func optionalES256Key(ctx context.Context, tok *hsm.Token, uri, token, defaultLabel, what, ceremony string, log *logrus.Entry) (crypto.Signer, error) {
	u, err := hsm.ParseURI(uri)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if u.Token == "" {
		u.Token = token
	}
	k, err := tok.Signer(ctx, u)
	if errors.Is(err, hsm.ErrKeyNotFound) && defaultLabel != "" && u.Object == defaultLabel {
		log.WithField("key", u.String()).Warnf("no %s on the token: the feature is off until '%s' creates it", what, ceremony)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, u, err)
	}
	if pub, ok := k.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s %s: want an ECDSA P-256 key (ES256)", what, u)
	}
	if err := tok.CheckKeyPolicy(ctx, k); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// instrumentOptional wraps a key in the token metrics, keeping nil nil.
func instrumentOptional(m *hsm.Metrics, role string, k crypto.Signer) crypto.Signer {
	if k == nil {
		return nil
	}
	return m.Signer(role, k)
}
