package registry_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// testCard is a small A2A v1.0 agent card for name with interface URLs.
func testCard(name string, urls ...string) []byte {
	var b strings.Builder
	b.WriteString(`{"name":"` + name + `","description":"test agent","version":"1.0.0","supportedInterfaces":[`)
	for i, u := range urls {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"url":"` + u + `","protocolBinding":"JSONRPC","protocolVersion":"1.0"}`)
	}
	b.WriteString(`],"skills":[{"id":"s","name":"S","description":"does s","tags":["t"]}]}`)
	return []byte(b.String())
}

func registerWithA2AURL(t *testing.T, f *registrytest.Fixture, a registry.Actor, name, prefix string) *registry.Issued {
	t.Helper()
	csr, _ := f.NewCSR()
	md := map[string]string{}
	if prefix != "" {
		md[registry.MetadataA2AURL] = prefix
	}
	iss, err := f.Registry.Register(context.Background(), a, registry.RegisterRequest{Name: name, CSR: csr, Metadata: md})
	if err != nil {
		t.Fatalf("Register(%q): %v", name, err)
	}
	return iss
}

func TestSignAgentCard(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		const prefix = "https://agents.acme.example/a2a/bot"
		iss := registerWithA2AURL(t, f, owner, "bot.acme", prefix)
		registerWithA2AURL(t, f, owner, "bare.acme", "")
		card := testCard("bot.acme", prefix, prefix+"/grpc")

		signed, err := f.Registry.SignAgentCard(ctx, owner, "bot.acme", card)
		if err != nil {
			t.Fatalf("SignAgentCard(owner) = %v", err)
		}
		keys := func(kid string) (crypto.PublicKey, error) {
			if kid != signed.KeyID {
				return nil, errors.New("unknown kid")
			}
			return f.CardKey.Public(), nil
		}
		c, sig, err := ca.VerifyAgentCard(signed.Card, keys)
		if err != nil {
			t.Fatalf("VerifyAgentCard(signed card) = %v", err)
		}
		if got := sig.Header[registry.CardLogIndexHeader]; got == nil || fmt.Sprint(got) != strconv.FormatInt(signed.LogIndex, 10) {
			t.Errorf("unprotected header %v, want %s = %d", sig.Header, registry.CardLogIndexHeader, signed.LogIndex)
		}
		canon, _ := c.Canonical()
		if d := sha256.Sum256(canon); hex.EncodeToString(d[:]) != signed.DigestSHA256 {
			t.Errorf("DigestSHA256 %s is not the SHA-256 of the canonical card", signed.DigestSHA256)
		}
		jwks, err := f.Registry.JWKS()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, k := range jwks {
			found = found || k.Kid == signed.KeyID
		}
		if !found {
			t.Errorf("kid %s is not in the JWKS %+v", signed.KeyID, jwks)
		}

		// The log entry: agent_card, the current certificate, the card
		// digest, name indexes and no plaintext.
		leaves, err := f.Registry.LogEntries(ctx, signed.LogIndex, signed.LogIndex+1)
		if err != nil || len(leaves) != 1 {
			t.Fatalf("LogEntries = %d, %v", len(leaves), err)
		}
		e, err := translog.ParseEntry(leaves[0])
		if err != nil {
			t.Fatal(err)
		}
		cert := f.ParseCertificate(iss.CertificatePEM)
		if e.Type != translog.EventAgentCard || e.CardDigest != signed.DigestSHA256 || e.Fingerprint != ca.Fingerprint(cert) ||
			e.Fingerprint != signed.Fingerprint || len(e.NameIndexes) != 2 {
			t.Errorf("log entry %+v; want agent_card of %s with card %s", e, ca.Fingerprint(cert), signed.DigestSHA256)
		}
		for _, plain := range []string{"bot.acme", "acme", "agents.acme.example", "test agent"} {
			if bytes.Contains(leaves[0], []byte(plain)) {
				t.Errorf("log leaf contains %q: %s", plain, leaves[0])
			}
		}
		// The owner gets the entry opened (name, certificate, VRF proofs)
		// with its receipt, like the agent's other entries.
		opened, err := f.Registry.OpenedEntries(ctx, owner, "bot.acme")
		if err != nil {
			t.Fatal(err)
		}
		openedCard := false
		for _, o := range opened {
			openedCard = openedCard || (o.LeafIndex == signed.LogIndex && o.Receipt != nil)
		}
		if !openedCard {
			t.Errorf("OpenedEntries has no opening with a receipt for leaf %d", signed.LogIndex)
		}
		events, _, err := f.Registry.ListAudit(ctx, f.Admin(), "", 100)
		if err != nil {
			t.Fatal(err)
		}
		audited := false
		for _, ev := range events {
			audited = audited || (ev.Action == registry.ActionSignCard && ev.Target == "bot.acme" && ev.Result == registry.ResultSuccess)
		}
		if !audited {
			t.Error("no agent.card audit event")
		}

		// The agent itself, over mTLS.
		self, err := f.Registry.AuthenticateAgent(ctx, []*x509.Certificate{cert, f.Intermediate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.SignAgentCard(ctx, *self, "bot.acme", card); err != nil {
			t.Errorf("SignAgentCard(agent itself) = %v", err)
		}

		for _, tt := range []struct {
			desc  string
			actor registry.Actor
			name  string
			card  []byte
			want  error
		}{
			{"agent for another agent", *self, "bare.acme", testCard("bare.acme", prefix), registry.ErrForbidden},
			{"read-only key", f.Actor("acme", "acme", registry.ScopeAgentsRead), "bot.acme", card, registry.ErrForbidden},
			{"other owner", f.Owner("evil", "acme"), "bot.acme", card, registry.ErrNotFound},
			{"unknown agent", owner, "nobody.acme", testCard("nobody.acme", prefix), registry.ErrNotFound},
			{"name mismatch", owner, "bot.acme", testCard("Bot", prefix), registry.ErrInvalid},
			{"no a2a_url", owner, "bare.acme", testCard("bare.acme", prefix), registry.ErrInvalid},
			{"url outside the prefix", owner, "bot.acme", testCard("bot.acme", prefix, "https://agents.acme.example/a2a/other"), registry.ErrInvalid},
			{"http url", owner, "bot.acme", testCard("bot.acme", "http://agents.acme.example/a2a/bot"), registry.ErrInvalid},
			{"not a card", owner, "bot.acme", []byte(`{"name":"bot.acme","url":"https://agents.acme.example/a2a/bot"}`), registry.ErrInvalid},
		} {
			t.Run(tt.desc, func(t *testing.T) {
				if _, err := f.Registry.SignAgentCard(ctx, tt.actor, tt.name, tt.card); !errors.Is(err, tt.want) {
					t.Errorf("SignAgentCard = %v, want %v", err, tt.want)
				}
			})
		}

		// A revoked agent gets no card.
		if _, err := f.Registry.Revoke(ctx, owner, "bot.acme", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.SignAgentCard(ctx, owner, "bot.acme", card); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("SignAgentCard(revoked agent) = %v, want ErrConflict", err)
		}

		// Without a card key: unavailable.
		cfg := f.Config
		cfg.CardSigner = nil
		r2, err := registry.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r2.SignAgentCard(ctx, owner, "bare.acme", testCard("bare.acme", prefix)); !errors.Is(err, registry.ErrUnavailable) || !errors.Is(err, registry.ErrCardSigningDisabled) {
			t.Errorf("SignAgentCard without a card key = %v, want ErrUnavailable", err)
		}
	})
}

// TestLogHeadLockedBeforeAgentRow: on PostgreSQL every transaction that
// appends to the log and locks an agent's row locks log_head first. A
// batch of issuance commits holds the head while its items lock their
// agents' rows; a revocation or a card signing that locked its agent's row
// first and then waited for the head could deadlock with a batch holding
// the head and waiting for that row (PostgreSQL aborts one after
// deadlock_timeout).
func TestLogHeadLockedBeforeAgentRow(t *testing.T) {
	record := statementRecorder(t)
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	const prefix = "https://agents.acme.example/a2a/bot"
	registerWithA2AURL(t, f, owner, "bot.acme", prefix)
	order := func(what string, do func() error) {
		t.Helper()
		stmts := record(do)
		head, agent := -1, -1
		for i, s := range stmts {
			if head < 0 && strings.Contains(s, "log_head") && (strings.Contains(s, "FOR UPDATE") || strings.HasPrefix(s, "UPDATE log_head")) {
				head = i
			}
			if agent < 0 && (strings.Contains(s, "UPDATE agents") || strings.Contains(s, "FROM agents") && strings.Contains(s, "FOR UPDATE")) {
				agent = i
			}
		}
		if head < 0 || agent < 0 || agent < head {
			t.Errorf("%s: the head is locked by statement %d, the agent's row by statement %d; want the head first:\n%s", what, head, agent, strings.Join(stmts, "\n"))
		}
		reads := 0
		for _, s := range stmts {
			if strings.HasPrefix(s, "SELECT size, root FROM log_head") {
				reads++
			}
		}
		if reads != 1 {
			t.Errorf("%s: the head read %d times; want once (the append takes the head its transaction locked):\n%s", what, reads, strings.Join(stmts, "\n"))
		}
	}
	order("rotation", func() error {
		csr, _ := f.NewCSR()
		_, err := f.Registry.Rotate(ctx, owner, "bot.acme", csr)
		return err
	})
	order("card", func() error {
		_, err := f.Registry.SignAgentCard(ctx, owner, "bot.acme", testCard("bot.acme", prefix))
		return err
	})
	// Against a real holder of the head: a revocation waits for the head
	// without holding its agent's row (before, it held the row and waited
	// for the head, which a batch holding the head and waiting for the row
	// would deadlock with).
	db, err := sql.Open("postgres", f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holder, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.ExecContext(ctx, `SELECT size FROM log_head WHERE id = 1 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	revoked := make(chan error, 1)
	go func() {
		_, err := f.Registry.Revoke(ctx, owner, "bot.acme", "keyCompromise")
		revoked <- err
	}()
	waiting := false
	for deadline := time.Now().Add(10 * time.Second); !waiting && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := db.QueryRowContext(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if !waiting {
		t.Fatal("the revocation never waited for the log's head")
	}
	if _, err := holder.ExecContext(ctx, `SELECT 1 FROM agents WHERE name = 'bot.acme' FOR UPDATE NOWAIT`); err != nil {
		t.Errorf("the agent's row, while the revocation waits for the head: %v; want it free", err)
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := <-revoked; err != nil {
		t.Fatalf("revocation after the head was released: %v", err)
	}
	order("revocation of a revoked agent", func() error {
		_, err := f.Registry.Revoke(ctx, owner, "bot.acme", "keyCompromise")
		return err
	})
}
