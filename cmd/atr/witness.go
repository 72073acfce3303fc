package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/registry/witness"
)

// loadLogKeyEd25519 finds the log's Ed25519 key (cfg.LogKeyEd25519),
// checks its attribute policy and returns its note signer (instrumented as
// "log-ed25519") and public key. When the key is missing it is an error if
// witnesses are configured or the URI was given explicitly; otherwise the
// log keeps signing with its ECDSA key alone and nils are returned.
func loadLogKeyEd25519(ctx context.Context, cfg Config, tok *hsm.Token, hsmm *hsm.Metrics, origin string, log *logrus.Entry) (note.Signer, crypto.PublicKey, error) {
	if cfg.LogKeyEd25519 == "" {
		return nil, nil, nil
	}
	u, err := hsm.ParseURI(cfg.LogKeyEd25519)
	if err != nil {
		return nil, nil, fmt.Errorf("log Ed25519 key: %w", err)
	}
	if u.Token == "" {
		u.Token = cfg.PKCS11Token
	}
	key, err := tok.Ed25519Signer(ctx, u)
	if errors.Is(err, hsm.ErrKeyNotFound) && len(cfg.Witnesses) == 0 &&
		cfg.LogKeyEd25519 == "pkcs11:token="+cfg.PKCS11Token+";object="+defaultLogEd25519Label {
		log.WithField("key", u.String()).Warn("no Ed25519 log key on the token: checkpoints carry the ECDSA signature only and witnesses cannot verify them (run 'atr ceremony log-key-ed25519')")
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("log Ed25519 key %s: %w (run 'atr ceremony log-key-ed25519')", u, err)
	}
	if err := key.CheckPolicy(ctx); err != nil {
		return nil, nil, fmt.Errorf("log Ed25519 key %s: %w", u, err)
	}
	s, err := translog.NewEd25519NoteSigner(origin, hsmm.Signer("log-ed25519", key))
	if err != nil {
		return nil, nil, fmt.Errorf("log Ed25519 key: %w", err)
	}
	log.WithField("key", key.URI().String()).Info("checkpoints are also signed with the Ed25519 log key")
	return s, key.Public(), nil
}

// withLogEd25519 adds the Ed25519 log key (if any) to a registry config.
func withLogEd25519(c registry.Config, s note.Signer, pub crypto.PublicKey) registry.Config {
	c.LogSignerEd25519, c.LogPublicKeyEd25519 = s, pub
	return c
}

// startWitnesses starts submitting checkpoints to the configured witnesses
// (until ctx ends) and returns the submitter's metrics; no witnesses, no
// goroutine.
func startWitnesses(ctx context.Context, cfg Config, reg *registry.Registry, log *logrus.Entry) ([]prometheus.Collector, error) {
	ws, err := witness.ParseWitnesses(strings.Join(cfg.Witnesses, ","))
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, nil
	}
	timeout := cfg.WitnessTimeout // bounds checked by Validate
	s, err := witness.New(reg, witness.Config{Witnesses: ws, Timeout: timeout, Log: log.WithField("component", "witness")})
	if err != nil {
		return nil, err
	}
	go s.Run(ctx)
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name
	}
	log.WithField("witnesses", strings.Join(names, ",")).Info("submitting checkpoints to witnesses")
	return s.Collectors(), nil
}
