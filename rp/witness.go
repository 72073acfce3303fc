package rp

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// Errors VerifyCheckpoint wraps; callers branch with errors.Is.
var (
	// ErrLogSignature: the checkpoint carries no valid signature by a log
	// key, a signature by a known key does not verify, or the note does not
	// parse.
	ErrLogSignature = errors.New("rp: checkpoint is not validly signed by the log")
	// ErrWitnessPolicy: fewer distinct policy witnesses cosigned the
	// checkpoint than the policy's threshold.
	ErrWitnessPolicy = errors.New("rp: checkpoint does not satisfy the witness policy")
)

// WitnessPolicy is a k-of-n witness policy: a checkpoint is accepted when at
// least Threshold of the witnesses named by Keys cosigned it.
type WitnessPolicy struct {
	// Keys are the witnesses' cosigner verifier keys,
	// "<name>+<08x key ID>+<base64(type || key)>", with type 0x04 (Ed25519
	// cosignature/v1, c2sp.org/tlog-cosignature) or 0x01 (an Ed25519 key
	// used for cosignature/v1, as litewitness prints it).
	Keys []string
	// Threshold is how many distinct Keys must have cosigned: 0 accepts a
	// checkpoint with the log signature alone; at most len(Keys).
	Threshold int
}

type keyID struct {
	name string
	hash uint32
}

// verifiers parses the policy's keys; two keys with the same name and key
// ID are refused (they would count twice).
func (p WitnessPolicy) verifiers() (map[keyID]note.Verifier, error) {
	if p.Threshold < 0 || p.Threshold > len(p.Keys) {
		return nil, fmt.Errorf("rp: witness policy: threshold %d of %d keys", p.Threshold, len(p.Keys))
	}
	out := make(map[keyID]note.Verifier, len(p.Keys))
	raw := make(map[string]bool, len(p.Keys)) // public keys: one key under two names counts once
	for _, k := range p.Keys {
		k = strings.TrimSpace(k)
		v, err := fnote.NewVerifierForCosignatureV1(k)
		if err != nil {
			return nil, fmt.Errorf("rp: witness policy: key %q: %v", k, err)
		}
		id := keyID{v.Name(), v.KeyHash()}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("rp: witness policy: key %s+%08x listed twice", id.name, id.hash)
		}
		// cosignature/v1 does not sign the witness name, so one witness's line
		// relabelled under a second name would verify twice: refuse a public key
		// listed under two names (whatever its type byte).
		var pub string
		if parts := strings.SplitN(k, "+", 3); len(parts) == 3 {
			pub = parts[2]
			if b, err := base64.StdEncoding.DecodeString(pub); err == nil && len(b) > 1 {
				pub = string(b[1:])
			}
		}
		if raw[pub] {
			return nil, fmt.Errorf("rp: witness policy: the public key of %s is listed under another name too", v.Name())
		}
		raw[pub] = true
		out[id] = v
	}
	return out, nil
}

// Validate checks the threshold and parses every key.
func (p WitnessPolicy) Validate() error {
	_, err := p.verifiers()
	return err
}

// policyVerifiers answers witness keys first, then the log's.
type policyVerifiers struct {
	log       note.Verifiers
	witnesses map[keyID]note.Verifier
}

func (v policyVerifiers) Verifier(name string, hash uint32) (note.Verifier, error) {
	if w, ok := v.witnesses[keyID{name, hash}]; ok {
		return w, nil
	}
	return v.log.Verifier(name, hash)
}

// VerifyCheckpoint checks a signed checkpoint (c2sp.org/tlog-checkpoint as a
// c2sp.org/signed-note) and returns it parsed. It requires
//
//  1. a valid signature by one of logVerifiers under the key name equal to
//     the checkpoint origin (for ATR, the ECDSA or the Ed25519 log key;
//     ParseLogVerifiers reads both), else ErrLogSignature;
//  2. valid cosignatures (c2sp.org/tlog-cosignature, cosignature/v1) by at
//     least policy.Threshold distinct keys of policy.Keys, else
//     ErrWitnessPolicy.
//
// Signatures by keys that are neither the log's nor the policy's are
// ignored and never count; a signature line by a known key that does not
// verify makes the whole checkpoint invalid. The note is at most
// translog.MaxCheckpointSize bytes and its text must parse strictly.
func VerifyCheckpoint(msg []byte, logVerifiers note.Verifiers, policy WitnessPolicy) (translog.Checkpoint, error) {
	witnesses, err := policy.verifiers()
	if err != nil {
		return translog.Checkpoint{}, err
	}
	if logVerifiers == nil {
		return translog.Checkpoint{}, errors.New("rp: verifying checkpoint: no log verifiers")
	}
	if len(msg) > translog.MaxCheckpointSize {
		return translog.Checkpoint{}, fmt.Errorf("%w: %d bytes", ErrLogSignature, len(msg))
	}
	n, err := note.Open(msg, policyVerifiers{log: logVerifiers, witnesses: witnesses})
	if err != nil {
		return translog.Checkpoint{}, fmt.Errorf("%w: %v", ErrLogSignature, err)
	}
	c, err := translog.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return translog.Checkpoint{}, fmt.Errorf("%w: %v", ErrLogSignature, err)
	}
	logSigned := false
	cosigned := map[keyID]bool{}
	for _, s := range n.Sigs {
		id := keyID{s.Name, s.Hash}
		if _, ok := witnesses[id]; ok {
			cosigned[id] = true
			continue
		}
		if s.Name == c.Origin {
			logSigned = true
		}
	}
	if !logSigned {
		return translog.Checkpoint{}, fmt.Errorf("%w: no signature by a log key named %q", ErrLogSignature, c.Origin)
	}
	if len(cosigned) < policy.Threshold {
		return translog.Checkpoint{}, fmt.Errorf("%w: %d of the required %d witnesses cosigned tree size %d",
			ErrWitnessPolicy, len(cosigned), policy.Threshold, c.Size)
	}
	return c, nil
}

// ParseLogVerifiers reads the log's verifier keys as GET /v1/log/vkey
// serves them (one per line): ECDSA P-256 (type 0x02) and Ed25519 (type
// 0x01). Blank lines are skipped; at least one key is required.
func ParseLogVerifiers(vkeys ...string) (note.Verifiers, error) {
	var vs []note.Verifier
	for _, block := range vkeys {
		for _, k := range strings.Split(block, "\n") {
			k = strings.TrimSpace(k)
			if k == "" {
				continue
			}
			v, err := translog.ParseVerifierKey(k)
			if err != nil {
				v, err = note.NewVerifier(k)
			}
			if err != nil {
				return nil, fmt.Errorf("rp: log verifier key %q: neither ECDSA (0x02) nor Ed25519 (0x01): %v", k, err)
			}
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return nil, errors.New("rp: no log verifier keys")
	}
	return note.VerifierList(vs...), nil
}
