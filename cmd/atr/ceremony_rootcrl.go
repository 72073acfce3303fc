package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/registry"
)

const (
	ceremonyRootCRLSummary = "sign (with the root) and publish the CRL of revoked intermediates"
	defaultRootCRLValidity = 30 * 24 * time.Hour
	maxRootCRLValidity     = 366 * 24 * time.Hour
	defaultIntermediateRev = "cACompromise"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runCeremonyRootCRL(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("ceremony root-crl", "ceremony root-crl [flags]",
		`Sign, with the root key on the root token, the root's CRL of revoked
intermediates (an ARL), and publish it in the registry's database, from
which every replica serves it at /v1/crl/<root key id> (the URL in the
intermediates' CRL distribution point) and applies it at once: the revoked
intermediate's leaves are revoked on its CRL and in OCSP (reason
cACompromise), POST /v1/verify answers issuer_revoked, the CA bundles drop
it, and the server refuses to issue under it.

The new CRL lists every intermediate of the previous one plus those named by
--revoke (a label or SHA-256 fingerprint of an intermediate on the online
token, or a PEM file). Without --revoke it re-signs the same list with a new
number: run it before nextUpdate (--validity, default 30 days; schedule it
weekly) so that relying parties never hold an expired root CRL. Writes
DATA_DIR/ca/root-<key id>.crl and a transcript. With --if-missing and no
--revoke it does nothing when the root already published a CRL.`,
		`# first publication (no revoked intermediate), then weekly:
atr ceremony root-crl --operator alice
# revoke a compromised intermediate (after rotating to a new one):
atr ceremony root-crl --revoke atr-issuing-1 --reason keyCompromise --operator alice`)
	var (
		opts      ceremonyOpts
		revoke    multiFlag
		reason    = fs.String("reason", defaultIntermediateRev, "RFC 5280 reason for the intermediates named by --revoke (cACompromise, keyCompromise, superseded, cessationOfOperation, …)")
		validity  = fs.Duration("validity", defaultRootCRLValidity, "nextUpdate − thisUpdate of the new CRL (at most a year)")
		rootLabel = fs.String("root-label", "", "label of the root on the root token (default: the newest valid root with a key)")
	)
	fs.Var(&revoke, "revoke", "intermediate to revoke: label or SHA-256 fingerprint on the online token, or a PEM file (repeatable)")
	opts.bind(fs, true)
	cfg, err := a.loadConfig(fs, optCommon|optToken|optRoot|optDatabase, args)
	if err != nil {
		return err
	}
	code, err := ca.ReasonCode(*reason)
	if err != nil {
		return usagef("--reason %q: %v", *reason, err)
	}
	if *validity <= 0 || *validity > maxRootCRLValidity {
		return usagef("--validity %v: must be positive and at most a year", *validity)
	}
	c, err := a.newCeremony("root-crl", cfg, opts)
	if err != nil {
		return err
	}
	return c.rootCRL(ctx, revoke, code, *validity, *rootLabel)
}

func (c *ceremony) rootCRL(ctx context.Context, revoke []string, reason int, validity time.Duration, rootLabel string) error {
	cfg, now := c.cfg, c.a.now().UTC()

	// Step 1: the intermediates to revoke, from the online token or files.
	var targets []*x509.Certificate
	if len(revoke) > 0 {
		var err error
		if targets, err = c.findIntermediates(ctx, revoke); err != nil {
			return err
		}
	}

	// Step 2: the root key and certificate.
	root, rootSigner, rootTC, err := c.rootKey(ctx, rootLabel, now)
	if err != nil {
		return err
	}
	defer root.Close()
	responder, err := ca.NewResponder(rootSigner, rootTC.Cert)
	if err != nil {
		return err
	}
	for _, t := range targets {
		if ca.IssuerOf(t, []*x509.Certificate{rootTC.Cert}, now) == nil {
			return fmt.Errorf("intermediate %q (serial %s) was not issued by root %q", t.Subject.CommonName, ca.FormatSerial(t.SerialNumber), rootTC.Label)
		}
	}

	// Step 3: the previous list, from the database every replica reads.
	store, err := registry.Open(ctx, cfg.DatabaseURL, c.log)
	if err != nil {
		return fmt.Errorf("opening the database: %w", err)
	}
	defer store.Close()
	if _, err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrating the database: %w", err)
	}
	prev, err := store.LatestRootCRL(ctx, responder.KeyID())
	switch {
	case errors.Is(err, registry.ErrNotFound):
		prev = nil
	case err != nil:
		return err
	case c.opts.ifMissing && len(targets) == 0:
		c.log.WithField("root", responder.KeyID()).Info("the root already published a CRL; nothing to do (--if-missing)")
		return nil
	}
	number, entries, added, err := ca.NextCRL(prev, rootTC.Cert, targets, reason, now)
	if err != nil {
		return fmt.Errorf("root %q: %w", rootTC.Label, err)
	}
	for _, t := range targets {
		if slices.Contains(added, t) {
			c.recordCert(cfg.PKCS11Token, "revoked", t)
		} else {
			c.log.WithField("serial", ca.FormatSerial(t.SerialNumber)).Warn("intermediate already revoked; kept with its first revocation time and reason")
		}
	}

	// Step 4: sign with the root, publish, write the file and transcript.
	this := now.Truncate(time.Second)
	der, err := responder.SignCRL(number, this, this.Add(validity), entries)
	if err != nil {
		return fmt.Errorf("signing the root CRL: %w", err)
	}
	keyID, err := store.PublishRootCRL(ctx, der, []*x509.Certificate{rootTC.Cert})
	if err != nil {
		return fmt.Errorf("publishing the root CRL: %w", err)
	}
	c.recordCert(cfg.RootToken, rootTC.Label, rootTC.Cert)
	if err := c.output("root-"+keyID+".crl", der); err != nil {
		return err
	}
	c.log.WithFields(logrus.Fields{"root": keyID, "crl_number": number.String(), "revoked_intermediates": len(entries),
		"next_update": this.Add(validity).Format(time.RFC3339)}).Info("root CRL signed and published")
	fmt.Fprintf(c.a.stdout, "root CRL %s published: number %s, %d revoked intermediate(s), next update %s (re-sign before then)\n",
		keyID, number, len(entries), this.Add(validity).Format(time.RFC3339))
	if err := c.listToken(ctx, cfg.RootToken, root); err != nil {
		return err
	}
	return c.finish()
}

// findIntermediates resolves --revoke values: a PEM file, or the label or
// SHA-256 fingerprint of an intermediate on the online token.
func (c *ceremony) findIntermediates(ctx context.Context, names []string) ([]*x509.Certificate, error) {
	var onToken []hsm.TokenCertificate
	var out []*x509.Certificate
	for _, n := range names {
		if data, err := os.ReadFile(n); err == nil {
			certs, err := ca.ParseCertificatesPEM(data, 1)
			if err != nil {
				return nil, fmt.Errorf("--revoke %s: %w", n, err)
			}
			out = append(out, certs[0])
			continue
		}
		if onToken == nil {
			tok, err := openIssuingToken(ctx, c.cfg, c.log)
			if err != nil {
				return nil, err
			}
			all, err := tok.Certificates(ctx)
			tok.Close()
			if err != nil {
				return nil, fmt.Errorf("listing certificates on token %q: %w", c.cfg.PKCS11Token, err)
			}
			_, onToken = splitCAs(all)
		}
		var found *x509.Certificate
		for _, tc := range onToken {
			if tc.Label == n || strings.EqualFold(ca.Fingerprint(tc.Cert), n) {
				found = tc.Cert
				break
			}
		}
		if found == nil {
			return nil, usagef("--revoke %q: no intermediate with that label or SHA-256 fingerprint on token %q, and no such PEM file", n, c.cfg.PKCS11Token)
		}
		out = append(out, found)
	}
	return out, nil
}
