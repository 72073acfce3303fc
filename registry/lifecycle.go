package registry

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/redact"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// Limits on what a registration may carry.
const (
	maxCapabilities  = 32
	maxCapabilityLen = 64
	maxMetadata      = 32
	maxMetaKeyLen    = 64
	maxMetaValueLen  = 1024
)

// Pending issuance states.
const (
	pendingPending   = "pending"
	pendingIssued    = "issued"
	pendingAbandoned = "abandoned"
)

// Register registers a new agent for the actor's owner and issues its first
// certificate. The steps, in the order DESIGN.md fixes:
//
//  1. Authorize: agents:write; the owner is the actor's, never the
//     request's; the normalized name must lie inside the key's namespace
//     (else ErrForbidden); an existing name is ErrConflict.
//  2. Parse the CSR strictly (ca.ParseCSR: self-signature, key policy).
//  3. Draw a random serial and build + lint the TBS (Issuer.Prepare).
//  4. Record serial and TBS as pending and commit (durable) — before signing.
//  5. Sign through the token.
//  6. In one transaction: agent and certificate rows, pending → issued,
//     transparency log entry, audit event carrying the log index.
//  7. Return certificate, chain and log index (only after the commit, so a
//     client never holds a certificate the registry does not know).
func (r *Registry) Register(ctx context.Context, a Actor, req RegisterRequest) (*Issued, error) {
	// Step 1: authorize.
	if !a.can(ScopeAgentsWrite) || a.Owner == "" {
		return nil, r.deny(ctx, a, ActionRegister, req.Name, fmt.Errorf("registry: register: %w", bare(ErrForbidden)))
	}
	name, err := ca.NormalizeAgentName(req.Name)
	if err != nil {
		return nil, invalid("name", err)
	}
	if !inNamespace(name, a.Namespace, a.IsAdmin()) {
		return nil, r.deny(ctx, a, ActionRegister, name, fmt.Errorf("registry: register: name outside the key's namespace: %w", bare(ErrForbidden)))
	}
	caps, md, err := checkAttributes(req.Capabilities, req.Metadata)
	if err != nil {
		return nil, err
	}
	var n int
	if err := r.store.db.GetContext(ctx, &n, r.store.db.Rebind(`SELECT COUNT(*) FROM agents WHERE name = ?`), name); err != nil {
		return nil, dbErr("register: checking name", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("registry: register: agent %s: %w", name, bare(ErrConflict))
	}
	// Step 2: parse the CSR.
	csr, err := ca.ParseCSR(req.CSR)
	if err != nil {
		return nil, invalid("csr", err)
	}
	capsJSON, _ := json.Marshal(caps)
	mdJSON, _ := json.Marshal(md)
	// The name's VRF proofs (on the token) are computed while the
	// certificate is linted, recorded and signed; the commit waits for them.
	var proofs nameProofs
	awaitProofs := r.nameProofsAsync(ctx, name, false, &proofs)
	var (
		agent Agent
		leaf  loggedLeaf
	)
	cert, rec, err := r.issue(ctx, a, ActionRegister, name, a.Owner, "register", csr, awaitProofs, func(tx *sqlx.Tx, cert *x509.Certificate, rec *CertificateRecord, now time.Time, pending guard) error {
		// Log opening first (planned in memory, the head read and locked
		// unless the batch holds it), then one execPlan — one round trip
		// on PostgreSQL — settles the pending row, appends and stores the
		// agent, its certificate and the audit event.
		var (
			p   *appendPlan
			err error
		)
		if leaf, p, err = r.planAgentEvent(ctx, tx, agentEvent{typ: translog.EventRegister, time: now, name: name, cert: cert, proofs: proofs}); err != nil {
			return dbErr("register: log", err)
		}
		idx := leaf.opened.LeafIndex
		rec.LogIndex = idx
		agent = Agent{Name: name, Owner: a.Owner, Status: AgentActive, Capabilities: caps, Metadata: md,
			CurrentSerial: rec.Serial, CreatedAt: dbTime(now), UpdatedAt: dbTime(now)}
		audit, err := r.auditEvent(a, ActionRegister, name, ResultSuccess, map[string]string{
			"serial": rec.Serial, "fingerprint_sha256": rec.FingerprintSHA256}, &idx)
		if err != nil {
			return err
		}
		if err := execPlan(ctx, tx, "register: storing agent and certificate", []guard{pending, p.head}, append(p.stmts,
			stmt{`INSERT INTO agents (name, owner, status, capabilities, metadata, current_serial, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, []any{name, a.Owner, AgentActive, string(capsJSON), string(mdJSON), rec.Serial, dbTime(now), dbTime(now)}},
			insertCert(newCertRow(name, rec, now)), audit)); err != nil {
			return err
		}
		p.written()
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.log.WithFields(map[string]any{"agent": name, "serial": rec.Serial, "actor": a.label(), "request_id": a.RequestID}).Info("agent registered")
	return r.withReceipt(ctx, r.issued(agent, cert, *rec), leaf), nil
}

// Rotate issues a new certificate for an existing, active agent from a new
// CSR. The caller is the agent's owner (agents:write), an admin, or the agent
// itself (Actor.AgentName == name, over mTLS). The previous certificate
// becomes superseded and keeps verifying until now + RotationGrace. The log
// entry names the previous fingerprint. Other owners' agents are
// ErrNotFound; a revoked agent is ErrConflict.
func (r *Registry) Rotate(ctx context.Context, a Actor, name string, csrPEM []byte) (*Issued, error) {
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return nil, invalid("name", err)
	}
	name = norm
	// The replaced certificate's fingerprint, for the log entry, is read
	// with the agent, before the transaction (a serial's fingerprint never
	// changes; the transaction checks that the serial is still the agent's).
	var oldFingerprint *string
	agent, err := r.authorizeAgentWith(ctx, a, ActionRotate, name, true, func() (*Agent, error) {
		var ag *Agent
		var err error
		ag, oldFingerprint, err = r.loadAgentAndCurrent(ctx, name)
		return ag, err
	})
	if err != nil {
		return nil, err
	}
	if agent.Status != AgentActive {
		return nil, fmt.Errorf("registry: rotate: agent %s is revoked: %w", name, bare(ErrConflict))
	}
	oldSerial := agent.CurrentSerial
	if oldFingerprint == nil {
		return nil, fmt.Errorf("registry: rotate: reading previous certificate %s: %w", oldSerial, bare(ErrNotFound))
	}
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, invalid("csr", err)
	}
	var (
		proofs nameProofs
		leaf   loggedLeaf
	)
	awaitProofs := r.nameProofsAsync(ctx, name, true, &proofs) // see Register
	cert, rec, err := r.issue(ctx, a, ActionRotate, name, agent.Owner, "rotate", csr, awaitProofs, func(tx *sqlx.Tx, cert *x509.Certificate, rec *CertificateRecord, now time.Time, pending guard) error {
		// With the pending row, one guard locks the agent's row and moves
		// it to the new serial: it matches only while the agent is still
		// active with the serial this rotation replaces (a concurrent
		// revocation or rotation on any replica makes it match nothing).
		moved := guard{stmt: stmt{`UPDATE agents SET current_serial = ?, updated_at = ? WHERE name = ? AND status = ? AND current_serial = ?`,
			[]any{rec.Serial, dbTime(now), name, AgentActive, oldSerial}}, miss: func() error {
			return fmt.Errorf("registry: rotate: agent %s changed concurrently: %w", name, bare(ErrConflict))
		}}
		var (
			p   *appendPlan
			err error
		)
		if leaf, p, err = r.planAgentEvent(ctx, tx, agentEvent{typ: translog.EventRotate, time: now, name: name, cert: cert, proofs: proofs, previous: *oldFingerprint}); err != nil {
			return dbErr("rotate: log", err)
		}
		idx := leaf.opened.LeafIndex
		rec.LogIndex = idx
		rec.Predecessor = oldSerial
		agent.CurrentSerial, agent.UpdatedAt = rec.Serial, dbTime(now)
		audit, err := r.auditEvent(a, ActionRotate, name, ResultSuccess, map[string]string{
			"serial": rec.Serial, "fingerprint_sha256": rec.FingerprintSHA256, "previous_serial": oldSerial}, &idx)
		if err != nil {
			return err
		}
		// One execPlan, one round trip on PostgreSQL: the guards, the
		// append, the certificates and the audit event. The log's head is
		// locked before it (planAgentEvent, or earlier in the batch):
		// superseding bumps the revocation revision (a trigger), whose row
		// a revocation locks after the head too.
		if err := execPlan(ctx, tx, "rotate: storing certificate", []guard{pending, moved, p.head}, append(p.stmts,
			supersedeCert(oldSerial, rec.Serial, now.Add(r.cfg.RotationGrace)), insertCert(newCertRow(name, rec, now)), audit)); err != nil {
			return err
		}
		p.written()
		return nil
	})
	// The predecessor's status changed (or may have: the commit error could
	// be a lost acknowledgement): this replica's Verify must not answer from
	// its old status. It is the only status a rotation changes; every other
	// cached status stays (supersedes.go).
	r.status.evict(*oldFingerprint)
	r.notify.ownChange()
	if err != nil {
		return nil, err
	}
	r.log.WithFields(map[string]any{"agent": name, "serial": rec.Serial, "actor": a.label(), "request_id": a.RequestID}).Info("agent rotated")
	return r.withReceipt(ctx, r.issued(*agent, cert, *rec), leaf), nil
}

// commitFunc stores a freshly signed certificate inside the issuance
// transaction. It runs pending (markIssued) as the first of its guards,
// with guards of its own and the statements that store the issuance
// (execPlan: one round trip on PostgreSQL, after the log's head was read
// and locked for the append, unless the batch holds it). It fills
// rec.LogIndex (and Predecessor for rotations).
type commitFunc func(tx *sqlx.Tx, cert *x509.Certificate, rec *CertificateRecord, now time.Time, pending guard) error

// markIssued is the guard that moves an issuance's pending row to issued.
// It misses when Reconcile abandoned the row meanwhile (signing outlasted
// PendingTimeout): the certificate must then never be handed out.
func markIssued(kind, serial string, now time.Time) guard {
	return guard{stmt: settlePending(serial, pendingIssued, now), miss: func() error {
		return fmt.Errorf("registry: %s: pending issuance %s was reconciled before it completed: %w", kind, serial, bare(ErrUnavailable))
	}}
}

// issue runs steps 3–6 of the issuance ordering for an authorized request.
// await, when set, runs after the signature and before the commit (the
// name's VRF proofs, computed meanwhile); its error abandons the issuance.
func (r *Registry) issue(ctx context.Context, a Actor, action, name, owner, kind string, csr *ca.CSR, await func() error, commit commitFunc) (*x509.Certificate, *CertificateRecord, error) {
	if r.issuer == nil {
		return nil, nil, fmt.Errorf("registry: %s: no issuer configured: %w", kind, bare(ErrUnavailable))
	}
	if revoked, err := r.issuerRevoked(ctx, ca.KeyID(r.issuer.Certificate())); err != nil {
		return nil, nil, err
	} else if revoked {
		r.log.Error("the issuing CA was revoked by its root: issuance refused until a new intermediate is in service (scripts/ceremony/rotate-intermediate.sh, then restart)")
		return nil, nil, fmt.Errorf("registry: %s: the issuing CA was revoked by its root: %w", kind, bare(ErrUnavailable))
	}
	// Step 3: serial and linted TBS.
	now := r.now()
	serial, err := ca.NewSerialAt(r.rand, now)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: %s: serial: %w: %v", kind, bare(ErrUnavailable), err)
	}
	prep, err := r.issuer.Prepare(csr, name, serial, now)
	if err != nil {
		var pe *ca.PolicyError
		if errors.As(err, &pe) {
			return nil, nil, invalid("certificate request", err)
		}
		r.log.WithError(err).WithField("agent", name).Error("pre-issuance lint refused the certificate")
		return nil, nil, fmt.Errorf("registry: %s: preparing certificate: %v", kind, err)
	}
	serialHex := ca.FormatSerial(serial)
	// Step 4: record before sign.
	if err := r.store.insertPending(ctx, opInsertPending, pendingRow{Serial: serialHex, Agent: name, Owner: owner, Kind: kind, TBS: prep.TBS(), CreatedAt: now, UpdatedAt: now}); err != nil {
		if errors.Is(err, ErrConflict) {
			return nil, nil, fmt.Errorf("registry: %s: another issuance for %s is in progress: %w", kind, name, bare(ErrConflict))
		}
		return nil, nil, wrap(kind, err)
	}
	// Step 5: the real signature, through the token.
	cert, err := r.issuer.Sign(prep)
	if err != nil {
		r.abandon(ctx, a, action, name, serialHex, "signing failed")
		r.log.WithError(err).WithFields(map[string]any{"agent": name, "serial": serialHex, "request_id": a.RequestID}).Error("signing failed")
		return nil, nil, fmt.Errorf("registry: %s: signing: %w: %v", kind, bare(ErrUnavailable), err)
	}
	if await != nil {
		if err := await(); err != nil {
			r.abandon(ctx, a, action, name, serialHex, errCode(err))
			return nil, nil, err
		}
	}
	fp := sha256.Sum256(cert.Raw)
	rec := &CertificateRecord{Serial: serialHex, FingerprintSHA256: hex.EncodeToString(fp[:]), Status: CertIssued,
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), DER: cert.Raw, IssuerKeyID: hex.EncodeToString(cert.AuthorityKeyId)}
	// Step 6: one transaction for everything the issuance changes, committed
	// together with the issuances that are ready at the same time and the
	// checkpoint their receipts need (group commit, writer.go).
	err = r.store.inTxLogged(ctx, kind+": storing certificate", func(tx *sqlx.Tx) error {
		var settled bool
		pending := markIssued(kind, serialHex, now)
		pending.matched = &settled
		if err := commit(tx, cert, rec, now, pending); err != nil {
			return err
		}
		if !settled {
			// A commitFunc that did not run its pending guard: the row
			// may have been reconciled, so nothing of it may commit.
			return fmt.Errorf("registry: %s: the commit did not settle pending issuance %s", kind, serialHex)
		}
		return nil
	})
	if err != nil {
		r.abandon(ctx, a, action, name, serialHex, errCode(err))
		return nil, nil, err
	}
	return cert, rec, nil
}

// abandon marks a pending issuance abandoned (the certificate, if signed, was
// never returned) and audits it. Best effort: Reconcile catches what this
// misses.
func (r *Registry) abandon(ctx context.Context, a Actor, action, name, serial, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var ok bool
	err := r.store.inStatement(ctx, "abandon", func(q sqlx.ExtContext) error {
		var err error
		ok, err = certs(q).Abandon(ctx, serial, r.now())
		return err
	})
	if err != nil {
		r.log.WithError(err).WithField("serial", serial).Error("marking pending issuance abandoned")
		return
	}
	if ok {
		r.auditBestEffort(ctx, a, action, name, ResultError, map[string]string{"serial": serial, "pending": pendingAbandoned, "error": why})
	}
}

func (r *Registry) issued(agent Agent, cert *x509.Certificate, rec CertificateRecord) *Issued {
	return &Issued{Agent: agent, Certificate: rec, LogIndex: rec.LogIndex,
		CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})), ChainPEM: r.chainPEM}
}

// chainPEMOf returns the PEM of the issuer's chain, the issuing certificate
// first: every issuance's answer carries it, and it changes only with the
// issuer, which a Registry keeps for its life.
func chainPEMOf(iss *ca.Issuer) string {
	var chain strings.Builder
	for _, c := range iss.Chain() {
		chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return chain.String()
}

// authorizeAgent loads an agent and checks that a may act on it: admin, the
// owner with agents:write (agents:read when write is false), or — when
// agentSelf — the agent itself. Agents of other owners are ErrNotFound so
// that their existence is not revealed; the refusal is audited.
func (r *Registry) authorizeAgent(ctx context.Context, a Actor, action, name string, agentSelf bool) (*Agent, error) {
	return r.authorizeAgentWith(ctx, a, action, name, agentSelf, func() (*Agent, error) { return r.loadAgent(ctx, r.store.db, name, false) })
}

// authorizeAgentWith is authorizeAgent with the agent read by load (which
// may read more with it).
func (r *Registry) authorizeAgentWith(ctx context.Context, a Actor, action, name string, agentSelf bool, load func() (*Agent, error)) (*Agent, error) {
	scope := ScopeAgentsWrite
	if action == ActionGetAgent {
		scope = ScopeAgentsRead
	}
	switch {
	case a.AgentName != "":
		if !agentSelf || a.AgentName != name {
			return nil, r.deny(ctx, a, action, name, fmt.Errorf("registry: %s: %w", action, bare(ErrForbidden)))
		}
	case !a.can(scope) || (!a.IsAdmin() && a.Owner == ""):
		return nil, r.deny(ctx, a, action, name, fmt.Errorf("registry: %s: %w", action, bare(ErrForbidden)))
	}
	agent, err := load()
	if err != nil {
		if errors.Is(err, ErrNotFound) && !a.IsAdmin() {
			r.auditBestEffort(ctx, a, action, name, ResultDenied, map[string]string{"error": "not_found"})
		}
		return nil, err
	}
	// An owner key reaches only its owner's agents inside its namespace: two
	// keys of one owner granted different namespaces stay apart.
	if a.AgentName == "" && !a.IsAdmin() && (agent.Owner != a.Owner || !inNamespace(name, a.Namespace, false)) {
		return nil, r.deny(ctx, a, action, name, fmt.Errorf("registry: %s: agent %s: %w", action, name, bare(ErrNotFound)))
	}
	if a.AgentName != "" && agent.Status != AgentActive {
		return nil, r.deny(ctx, a, action, name, fmt.Errorf("registry: %s: %w", action, bare(ErrForbidden)))
	}
	return agent, nil
}

// checkAttributes validates capabilities and metadata; metadata values that
// contain a secret (a private key, an API key, a token) are refused outright.
func checkAttributes(caps []string, md map[string]string) ([]string, map[string]string, error) {
	if len(caps) > maxCapabilities {
		return nil, nil, invalid(fmt.Sprintf("at most %d capabilities", maxCapabilities), nil)
	}
	outCaps := make([]string, 0, len(caps))
	for _, c := range caps {
		if c == "" || len(c) > maxCapabilityLen || !isToken(c, ":._/-") {
			return nil, nil, invalid(fmt.Sprintf("capability must be 1-%d characters of [A-Za-z0-9:._/-]", maxCapabilityLen), nil)
		}
		outCaps = append(outCaps, c)
	}
	if len(md) > maxMetadata {
		return nil, nil, invalid(fmt.Sprintf("at most %d metadata entries", maxMetadata), nil)
	}
	outMD := make(map[string]string, len(md))
	for k, v := range md {
		if k == "" || len(k) > maxMetaKeyLen || !isToken(k, "._-") {
			return nil, nil, invalid(fmt.Sprintf("metadata key must be 1-%d characters of [A-Za-z0-9._-]", maxMetaKeyLen), nil)
		}
		if len(v) > maxMetaValueLen || !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
			return nil, nil, invalid(fmt.Sprintf("metadata value must be at most %d bytes of printable UTF-8", maxMetaValueLen), nil)
		}
		if redact.SensitiveKey(k) || redact.Redact(v) != v {
			return nil, nil, invalid("metadata must not contain secrets", nil)
		}
		outMD[k] = v
	}
	return outCaps, outMD, nil
}

func isToken(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}
