package rp_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// A relying party pins the log's verifier keys (GET /v1/log/vkey) and a
// witness policy, and accepts a checkpoint only when both hold.
func ExampleVerifyCheckpoint() {
	// The log (for ATR: keys on the token) and one witness.
	_, logKey, _ := ed25519.GenerateKey(rand.Reader)
	logSigner, _ := translog.NewEd25519NoteSigner("atr.example/log", logKey)
	logVKey, _ := translog.Ed25519VerifierKey("atr.example/log", logKey.Public())
	wskey, wvkey, _ := note.GenerateKey(rand.Reader, "witness.example/w1")
	witness, _ := fnote.NewSignerForCosignatureV1(wskey)

	signed, _ := translog.SignCheckpoint(translog.Checkpoint{Origin: "atr.example/log", Size: 42}, logSigner)
	text, _, _ := strings.Cut(string(signed), "\n\n")
	cosig, _ := note.Sign(&note.Note{Text: text + "\n"}, witness)
	_, cosigLine, _ := strings.Cut(string(cosig), "\n\n")
	cosigned := append(signed, cosigLine...)

	logVerifiers, err := rp.ParseLogVerifiers(logVKey)
	if err != nil {
		panic(err)
	}
	policy := rp.WitnessPolicy{Keys: []string{wvkey}, Threshold: 1}
	c, err := rp.VerifyCheckpoint(cosigned, logVerifiers, policy)
	fmt.Println(c.Size, err)
	_, err = rp.VerifyCheckpoint(signed, logVerifiers, policy)
	fmt.Println(err)
	// Output:
	// 42 <nil>
	// rp: checkpoint does not satisfy the witness policy: 0 of the required 1 witnesses cosigned tree size 42
}
