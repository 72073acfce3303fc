package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry/translog"
)

const (
	logKeyEd25519VKeyName     = "log-key-ed25519.vkey"
	ceremonyLogEd25519Summary = "generate the log's Ed25519 key for witnesses on the online token"
)

// runCeremonyLogKeyEd25519 is `atr ceremony log-key-ed25519`.
func runCeremonyLogKeyEd25519(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony log-key-ed25519", "ceremony log-key-ed25519 [flags]",
		`Generate the transparency log's Ed25519 key (sensitive, never extractable,
sign-only) on the online token. The log signs every checkpoint with it after
its ECDSA key, because C2SP witnesses verify only Ed25519 (signed-note type
0x01). Writes the key's signed-note verifier key (origin TRUST_DOMAIN/log) to
DATA_DIR/ca/log-key-ed25519.vkey: give that line to witness operators
(litewitness: witnessctl add-key). Refuses to run over an existing key.`,
		`atr ceremony log-key-ed25519 --data-dir ./var --operator alice`)
	var opts ceremonyOpts
	label := fs.String("label", defaultLogEd25519Label, "label of the log's Ed25519 key on the online token")
	opts.bind(fs, true)
	cfg, err := a.loadConfig(fs, optCommon|optToken|optTrust, args)
	if err != nil {
		return err
	}
	c, err := a.newCeremony("log-key-ed25519", cfg, opts)
	if err != nil {
		return err
	}
	tok, err := openIssuingToken(ctx, cfg, c.log)
	if err != nil {
		return err
	}
	defer tok.Close()
	origin := cfg.TrustDomain + "/log"
	signer, err := tok.GenerateEd25519Key(ctx, *label)
	if errors.Is(err, hsm.ErrExists) {
		if _, err := c.existingKey(ctx, tok, cfg.PKCS11Token, *label, false); err != nil {
			return err
		}
		s, err := tok.Ed25519Signer(ctx, hsm.URI{Token: cfg.PKCS11Token, Object: *label})
		if err != nil {
			return fmt.Errorf("opening the existing Ed25519 log key: %w", err)
		}
		vkey, err := translog.Ed25519VerifierKey(origin, s.Public())
		if err != nil {
			return err
		}
		c.log.WithField("label", *label).Info("Ed25519 log key already on the token; nothing to do (--if-missing)")
		return c.ensureFile(logKeyEd25519VKeyName, []byte(vkey+"\n"))
	}
	if err != nil {
		return fmt.Errorf("generating the Ed25519 log key: %w", err)
	}
	if err := c.recordKey(cfg.PKCS11Token, signer, string(hsm.Ed25519)); err != nil {
		return err
	}
	vkey, err := translog.Ed25519VerifierKey(origin, signer.Public())
	if err != nil {
		return err
	}
	if err := c.output(logKeyEd25519VKeyName, []byte(vkey+"\n")); err != nil {
		return err
	}
	if err := c.listToken(ctx, cfg.PKCS11Token, tok); err != nil {
		return err
	}
	return c.finish()
}
