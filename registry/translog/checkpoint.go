package translog

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// MaxCheckpointSize caps the signed checkpoints OpenCheckpoint reads.
const MaxCheckpointSize = 16 << 10

// Checkpoint is a C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the note
// text
//
//	<origin>\n<size>\n<base64 root hash>\n[<extension line>\n...]
//
// Origin is non-empty valid UTF-8 without Unicode spaces, '+' or control
// characters (the signed-note key-name rules, since the log's key name is
// its origin). Size is decimal without leading zeroes. Hash is standard
// padded base64 of 32 bytes. Extensions are optional non-empty lines.
type Checkpoint struct {
	Origin     string
	Size       int64
	Hash       tlog.Hash
	Extensions []string
}

func validName(s string) bool {
	if s == "" || !utf8.ValidString(s) || strings.Contains(s, "+") {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func validExtension(s string) bool {
	if s == "" || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Marshal returns the checkpoint's note text.
func (c Checkpoint) Marshal() ([]byte, error) {
	if !validName(c.Origin) {
		return nil, fmt.Errorf("%w: checkpoint origin %q", ErrInvalid, c.Origin)
	}
	if c.Size < 0 {
		return nil, fmt.Errorf("%w: checkpoint size %d", ErrInvalid, c.Size)
	}
	var b bytes.Buffer
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatInt(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Hash[:]))
	b.WriteByte('\n')
	for _, e := range c.Extensions {
		if !validExtension(e) {
			return nil, fmt.Errorf("%w: checkpoint extension line %q", ErrInvalid, e)
		}
		b.WriteString(e)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// ParseCheckpoint parses checkpoint note text (without signatures),
// strictly: every line ends in '\n' (no '\r'), the size is canonical
// decimal ("0" or no leading zero, fits int64), the hash is canonical
// standard base64 of exactly 32 bytes, extension lines are non-empty. Any
// deviation is ErrInvalid.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	if len(text) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint of %d bytes", ErrInvalid, len(text))
	}
	if !utf8.Valid(text) {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint is not UTF-8", ErrInvalid)
	}
	if len(text) == 0 || text[len(text)-1] != '\n' {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint does not end in a newline", ErrInvalid)
	}
	lines := strings.Split(string(text[:len(text)-1]), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint has %d lines, want at least 3", ErrInvalid, len(lines))
	}
	c := Checkpoint{Origin: lines[0]}
	if !validName(c.Origin) {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin %q", ErrInvalid, c.Origin)
	}
	size, err := parseCanonicalUint(lines[1])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint size: %v", ErrInvalid, err)
	}
	c.Size = size
	h, err := parseCanonicalHash(lines[2])
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint root hash: %v", ErrInvalid, err)
	}
	c.Hash = h
	for _, e := range lines[3:] {
		if !validExtension(e) {
			return Checkpoint{}, fmt.Errorf("%w: checkpoint extension line %q", ErrInvalid, e)
		}
		c.Extensions = append(c.Extensions, e)
	}
	return c, nil
}

func parseCanonicalUint(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not decimal digits", s)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", s)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q out of range", s)
	}
	return n, nil
}

func parseCanonicalHash(s string) (tlog.Hash, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("%q is not base64", s)
	}
	if len(b) != tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("%d bytes, want %d", len(b), tlog.HashSize)
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return tlog.Hash{}, fmt.Errorf("%q is not canonical base64", s)
	}
	var h tlog.Hash
	copy(h[:], b)
	return h, nil
}

// SignCheckpoint returns the signed note for c, signed by s and then by
// each of more (e.g. the log's ECDSA key and its Ed25519 key for
// witnesses), one signature line each, in that order. Every signer's key
// name must equal the checkpoint origin. Several signers sign at the same
// time, each on its own goroutine, so they must be safe to call
// concurrently (a signer passed twice signs concurrently with itself): on a
// token each signature is a round trip of its own, and the issuance waits
// for the slowest one instead of their sum (docs/performance-history.md, seventh
// pass).
func SignCheckpoint(c Checkpoint, s note.Signer, more ...note.Signer) ([]byte, error) {
	if len(more) > 0 {
		return StartSignCheckpoint(c, s, more...)()
	}
	text, err := checkpointText(c, s)
	if err != nil {
		return nil, err
	}
	return signNote(text, s)
}

// StartSignCheckpoint is SignCheckpoint begun: each signer signs on a
// goroutine of its own from now on, while the caller does other work (the
// registry's batches send their statements to PostgreSQL meanwhile), and
// the function returned waits for them and returns what SignCheckpoint
// would. It may be called any number of times, and need not be called at
// all: the signatures end on their own.
func StartSignCheckpoint(c Checkpoint, s note.Signer, more ...note.Signer) func() ([]byte, error) {
	signers := append([]note.Signer{s}, more...)
	text, err := checkpointText(c, signers...)
	if err != nil {
		return func() ([]byte, error) { return nil, err }
	}
	wait := presign(text, signers)
	return sync.OnceValues(func() ([]byte, error) { return signNote(text, wait()...) })
}

// checkpointText returns c's note text, once every signer's key name is
// c's origin.
func checkpointText(c Checkpoint, signers ...note.Signer) ([]byte, error) {
	for _, s := range signers {
		if s.Name() != c.Origin {
			return nil, fmt.Errorf("%w: signer name %q is not the checkpoint origin %q", ErrInvalid, s.Name(), c.Origin)
		}
	}
	return c.Marshal()
}

// signNote returns the note of text signed by signers, in that order.
func signNote(text []byte, signers ...note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: string(text)}, signers...)
	if err != nil {
		return nil, fmt.Errorf("translog: signing checkpoint: %w", err)
	}
	return msg, nil
}

// presign starts every signer's Sign over text at once, each on a goroutine
// of its own, and returns a function that waits for them and returns
// signers that hand note.Sign those signatures (or errors), so that
// note.Sign — which calls its signers one after the other — writes the
// same note it would have written with the signers themselves.
func presign(text []byte, signers []note.Signer) func() []note.Signer {
	out := make([]note.Signer, len(signers))
	var wg sync.WaitGroup
	for i, s := range signers {
		p := &presigned{Signer: s, text: text}
		out[i] = p
		wg.Go(func() {
			// A panicking signer is an error, as it would be on the
			// caller's goroutine under a recovering server.
			defer func() {
				if v := recover(); v != nil {
					p.sig, p.err = nil, fmt.Errorf("signer %q panicked: %v", s.Name(), v)
				}
			}()
			p.sig, p.err = s.Sign(text)
		})
	}
	return func() []note.Signer {
		wg.Wait()
		return out
	}
}

// presigned is a note.Signer whose signature over text was made already.
type presigned struct {
	note.Signer
	text []byte
	sig  []byte
	err  error
}

func (p *presigned) Sign(msg []byte) ([]byte, error) {
	if !bytes.Equal(msg, p.text) {
		return p.Signer.Sign(msg) // not the text presign signed: sign it now
	}
	return p.sig, p.err
}

// OpenCheckpoint verifies a signed checkpoint with v and parses it. The note
// must carry a valid signature by v (signatures by other keys, such as
// witness cosignatures, are ignored; a bad signature by v is refused), its
// origin must equal v's key name, and its text must parse strictly with
// ParseCheckpoint. The whole message is limited to MaxCheckpointSize.
func OpenCheckpoint(msg []byte, v note.Verifier) (Checkpoint, error) {
	if len(msg) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("%w: signed checkpoint of %d bytes", ErrInvalid, len(msg))
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("translog: opening checkpoint: %w", err)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin %q is not the key name %q", ErrInvalid, c.Origin, v.Name())
	}
	return c, nil
}
