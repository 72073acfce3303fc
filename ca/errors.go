package ca

import (
	"fmt"
	"strings"
)

// PolicyError is a refusal of untrusted input: a CSR, a key, a name or a PEM
// document that breaks ATR's policy. Field names the offending part ("csr",
// "key", "name", "certificate", "pem"); Reason is a short human-readable
// explanation that is safe to show to the client (it never contains the
// input itself beyond its size). Callers map it to "invalid request".
type PolicyError struct {
	Field  string
	Reason string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("ca: invalid %s: %s", e.Field, e.Reason)
}

func policyErr(field, format string, args ...any) *PolicyError {
	return &PolicyError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Finding is one failed lint: its name (a zlint lint name such as
// "e_ext_san_uri_relative" or an ATR agent lint such as "e_atr_one_uri_san"),
// its status ("error" or "fatal") and details.
type Finding struct {
	Lint    string
	Status  string
	Details string
}

// LintError reports that a certificate about to be issued failed pre-issuance
// linting. It is an internal error (the profile or the code is wrong), not a
// client error: nothing was signed by the real issuer.
type LintError struct {
	Findings []Finding
}

func (e *LintError) Error() string {
	parts := make([]string, 0, len(e.Findings))
	for _, f := range e.Findings {
		s := f.Lint
		if f.Details != "" {
			s += " (" + f.Details + ")"
		}
		parts = append(parts, s)
	}
	return "ca: pre-issuance lint failed: " + strings.Join(parts, ", ")
}

// Lints returns the names of the failed lints.
func (e *LintError) Lints() []string {
	names := make([]string, 0, len(e.Findings))
	for _, f := range e.Findings {
		names = append(names, f.Lint)
	}
	return names
}

// Reason is the stable, client-visible cause of a verification failure.
type Reason string

// Verification failure reasons. Callers may show them to clients.
const (
	// ReasonUntrustedChain: no chain to a trusted root could be built
	// (unknown issuer, bad signature, forged certificate, name constraints
	// violated, too many or malformed intermediates).
	ReasonUntrustedChain Reason = "untrusted_chain"
	// ReasonExpired: the chain is genuine but a certificate in it has expired.
	ReasonExpired Reason = "expired"
	// ReasonNotYetValid: the chain is genuine but a certificate in it is not
	// valid yet.
	ReasonNotYetValid Reason = "not_yet_valid"
	// ReasonWrongUsage: the chain is genuine but the leaf is not an agent
	// client certificate (no clientAuth EKU, no digitalSignature key usage,
	// or a CA certificate).
	ReasonWrongUsage Reason = "wrong_usage"
	// ReasonNotAgent: the chain is genuine but the leaf does not carry
	// exactly one agent SPIFFE ID in the trust domain.
	ReasonNotAgent Reason = "not_agent"
)

// VerifyError is returned by Verifier.Verify. Reason is stable and safe to
// show to clients; Err carries the underlying detail for server logs.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string {
	if e.Err == nil {
		return "ca: verification failed: " + string(e.Reason)
	}
	return "ca: verification failed: " + string(e.Reason) + ": " + e.Err.Error()
}

func (e *VerifyError) Unwrap() error { return e.Err }
