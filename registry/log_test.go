package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
	"github.com/agent-trust-registry/atr/registry/translog"
)

const logTestOrigin = "atr.test/log"

// countingSigner counts checkpoint signatures.
type countingSigner struct {
	note.Signer
	n atomic.Int64
}

func (s *countingSigner) Sign(msg []byte) ([]byte, error) {
	s.n.Add(1)
	return s.Signer.Sign(msg)
}

// fakeClock is a settable clock for the checkpoint rate limit.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type logFixture struct {
	url      string
	stores   []*Store // two "replicas" on one database
	logs     []*transparencyLog
	signer   *countingSigner
	verifier note.Verifier
	clock    *fakeClock
}

func newLogFixture(t *testing.T, dbName string) *logFixture {
	t.Helper()
	ctx := context.Background()
	d := sha256.Sum256([]byte("atr registry log test key"))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	ns, err := translog.NewNoteSigner(logTestOrigin, key)
	if err != nil {
		t.Fatal(err)
	}
	nv, err := translog.NewNoteVerifier(logTestOrigin, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	f := &logFixture{url: testdb.URL(t, dbName), signer: &countingSigner{Signer: ns}, verifier: nv,
		clock: &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	for i := range 2 {
		s, err := Open(ctx, f.url, logrus.NewEntry(l))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		if _, err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		tl := newTransparencyLog(s, f.signer, nv, logTestOrigin, logrus.NewEntry(l).WithField("replica", i))
		tl.now = f.clock.now
		f.stores = append(f.stores, s)
		f.logs = append(f.logs, tl)
	}
	return f
}

func (f *logFixture) appendOne(ctx context.Context, replica int, keyID string) (int64, error) {
	var idx int64
	err := f.stores[replica].inTx(ctx, "test append", func(tx *sqlx.Tx) error {
		var err error
		idx, _, err = f.logs[replica].appendTx(ctx, tx, f.entry(keyID))
		return err
	})
	return idx, err
}

// entry is a log entry of the tests (an API key's creation).
func (f *logFixture) entry(keyID string) translog.Entry {
	return translog.Entry{Version: translog.EntryVersion1, Type: translog.EventAPIKeyCreate, Time: f.clock.now(), Actor: "test", KeyID: keyID}
}

func (f *logFixture) openCheckpoint(t *testing.T, replica int) translog.Checkpoint {
	t.Helper()
	msg, err := f.logs[replica].checkpoint(context.Background())
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	c, err := translog.OpenCheckpoint(msg, f.verifier)
	if err != nil {
		t.Fatalf("OpenCheckpoint: %v\n%s", err, msg)
	}
	return c
}

// rfc6962Root is an independent RFC 6962 MTH over raw leaves.
func rfc6962Root(leaves [][]byte) tlog.Hash {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return sha256.Sum256(append([]byte{0}, leaves[0]...))
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := rfc6962Root(leaves[:k]), rfc6962Root(leaves[k:])
	return sha256.Sum256(slices.Concat([]byte{1}, l[:], r[:]))
}

func (f *logFixture) allEntries(t *testing.T, size int64) [][]byte {
	t.Helper()
	var out [][]byte
	for start := int64(0); start < size; start += maxLogEntriesPerRead {
		es, err := f.logs[0].entries(context.Background(), start, min(start+maxLogEntriesPerRead, size))
		if err != nil {
			t.Fatalf("entries(%d): %v", start, err)
		}
		out = append(out, es...)
	}
	return out
}

// TestLogConcurrentAppends: many goroutines on two replicas append at once;
// the log holds every event exactly once with no gaps, its root equals an
// independent RFC 6962 computation, and proofs served from the database
// verify against the signed checkpoints.
func TestLogConcurrentAppends(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			empty := f.openCheckpoint(t, 0)
			if empty.Size != 0 || empty.Hash != tlog.Hash(sha256.Sum256(nil)) {
				t.Fatalf("empty checkpoint = %+v", empty)
			}

			const goroutines, perG = 8, 20
			run := func(round int) {
				var wg sync.WaitGroup
				errs := make(chan error, goroutines*perG)
				for g := range goroutines {
					wg.Go(func() {
						for j := range perG {
							if _, err := f.appendOne(ctx, g%2, fmt.Sprintf("r%d-g%d-%d", round, g, j)); err != nil {
								errs <- err
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatalf("concurrent append: %v", err)
				}
			}

			run(0)
			c1 := f.openCheckpoint(t, 1)
			if c1.Size != goroutines*perG {
				t.Fatalf("checkpoint size = %d, want %d", c1.Size, goroutines*perG)
			}
			run(1)
			// Within the interval the old checkpoint is served...
			if c := f.openCheckpoint(t, 1); c.Size != c1.Size {
				t.Fatalf("checkpoint re-signed within %v: size %d", checkpointInterval, c.Size)
			}
			f.clock.advance(2 * checkpointInterval)
			c2 := f.openCheckpoint(t, 1)
			if c2.Size != 2*goroutines*perG {
				t.Fatalf("checkpoint size = %d, want %d", c2.Size, 2*goroutines*perG)
			}

			// Every event exactly once, in a gap-free log.
			leaves := f.allEntries(t, c2.Size)
			if int64(len(leaves)) != c2.Size {
				t.Fatalf("read %d entries, want %d", len(leaves), c2.Size)
			}
			seen := map[string]bool{}
			for i, data := range leaves {
				e, err := translog.ParseEntry(data)
				if err != nil {
					t.Fatalf("entry %d: %v", i, err)
				}
				if seen[e.KeyID] {
					t.Fatalf("event %s logged twice", e.KeyID)
				}
				seen[e.KeyID] = true
			}
			if len(seen) != 2*goroutines*perG {
				t.Fatalf("%d distinct events, want %d", len(seen), 2*goroutines*perG)
			}

			// Roots agree with an independent computation.
			if got, want := c1.Hash, rfc6962Root(leaves[:c1.Size]); got != want {
				t.Errorf("checkpoint 1 root %x, independent %x", got, want)
			}
			if got, want := c2.Hash, rfc6962Root(leaves); got != want {
				t.Errorf("checkpoint 2 root %x, independent %x", got, want)
			}

			// Consistency between the signed checkpoints.
			cp, err := f.logs[0].consistencyProof(ctx, c1.Size, c2.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := translog.CheckConsistency(cp, c2.Size, c2.Hash, c1.Size, c1.Hash); err != nil {
				t.Errorf("consistency proof from the database: %v", err)
			}
			// Inclusion of every entry in the latest checkpoint.
			for i, data := range leaves {
				p, err := f.logs[i%2].inclusionProof(ctx, int64(i), c2.Size)
				if err != nil {
					t.Fatal(err)
				}
				if err := translog.CheckInclusion(p, c2.Size, c2.Hash, int64(i), translog.LeafHash(data)); err != nil {
					t.Fatalf("inclusion of %d: %v", i, err)
				}
			}

			// Tiles: level 0 holds the leaf hashes, bundles the entries.
			tile, err := f.logs[0].tile(ctx, "tile/0/000.p/100")
			if err != nil {
				t.Fatal(err)
			}
			bundle, err := f.logs[0].tile(ctx, "tile/entries/000.p/100")
			if err != nil {
				t.Fatal(err)
			}
			got, err := translog.ParseEntryBundle(bundle)
			if err != nil || len(got) != 100 {
				t.Fatalf("bundle: %d entries, %v", len(got), err)
			}
			for i := range 100 {
				h := translog.LeafHash(leaves[i])
				if string(tile[i*32:(i+1)*32]) != string(h[:]) || string(got[i]) != string(leaves[i]) {
					t.Fatalf("tile/bundle entry %d differs", i)
				}
			}
			if _, err := f.logs[0].tile(ctx, "tile/0/001"); !errors.Is(err, ErrNotFound) {
				t.Errorf("tile beyond the tree: %v, want ErrNotFound", err)
			}
			if _, err := f.logs[0].tile(ctx, "tile/0/1"); !errors.Is(err, ErrInvalid) {
				t.Errorf("malformed tile path: %v, want ErrInvalid", err)
			}
			if n := f.signer.n.Load(); n != 3 {
				t.Errorf("%d checkpoint signatures, want 3 (sizes 0, %d, %d)", n, c1.Size, c2.Size)
			}
		})
	}
}

// TestLogCheckpointSingleflight: a burst of checkpoint requests from many
// goroutines yields one signature and one stored note.
func TestLogCheckpointSingleflight(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			if _, err := f.appendOne(ctx, 0, "k"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			notes := make([][]byte, 16)
			for i := range notes {
				wg.Go(func() {
					msg, err := f.logs[0].checkpoint(ctx)
					if err != nil {
						t.Errorf("checkpoint: %v", err)
					}
					notes[i] = msg
				})
			}
			wg.Wait()
			for _, n := range notes[1:] {
				if string(n) != string(notes[0]) {
					t.Fatalf("different notes for one size:\n%s\n%s", n, notes[0])
				}
			}
			if n := f.signer.n.Load(); n != 1 {
				t.Errorf("%d signatures, want 1", n)
			}
			var rows int
			if err := f.stores[0].db.GetContext(ctx, &rows, `SELECT COUNT(*) FROM log_checkpoints`); err != nil || rows != 1 {
				t.Errorf("log_checkpoints rows = %d, %v; want 1", rows, err)
			}
		})
	}
}

// blockingSigner holds its first signature until release is closed, and
// tells when it began.
type blockingSigner struct {
	note.Signer
	began, release chan struct{}
	once           sync.Once
}

func (s *blockingSigner) Sign(msg []byte) ([]byte, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.began)
		<-s.release
	}
	return s.Signer.Sign(msg)
}

// TestLogCovering (issue 14): a receipt's checkpoint. A checkpoint the
// process knows that covers the leaf is used without a signature or a
// database read; otherwise one is signed, paced by nothing. A caller that
// joins a signature begun before its own leaf was committed (so of a
// smaller tree) does not get that smaller checkpoint, nor a refusal: it asks
// for one more, which covers its leaf (the old code answered with a
// checkpoint that did not cover the leaf, and the receipt failed).
func TestLogCovering(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			l := f.logs[0]
			if _, err := l.covering(ctx, 1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("covering(1) of an empty log: %v, want ErrNotFound", err)
			}
			for i := range 3 {
				if _, err := f.appendOne(ctx, 0, fmt.Sprint("k", i)); err != nil {
					t.Fatal(err)
				}
			}
			signed := f.signer.n.Load()
			c, err := l.covering(ctx, 3)
			if err != nil || c.Size != 3 || f.signer.n.Load() != signed+1 {
				t.Fatalf("covering(3): size %v, %v, %d signatures; want a new checkpoint of size 3", c, err, f.signer.n.Load()-signed)
			}
			// Known and large enough: no signature, no database read (the
			// tables are renamed away meanwhile).
			for _, table := range []string{"log_checkpoints", "log_head", "log_hashes"} {
				if err := f.stores[0].Exec(ctx, `ALTER TABLE `+table+` RENAME TO `+table+`_hidden`); err != nil {
					t.Fatal(err)
				}
			}
			for _, minSize := range []int64{0, 1, 3} {
				if got, err := l.covering(ctx, minSize); err != nil || got != c {
					t.Fatalf("covering(%d) = %v, %v; want the known checkpoint", minSize, got, err)
				}
			}
			for _, table := range []string{"log_checkpoints", "log_head", "log_hashes"} {
				if err := f.stores[0].Exec(ctx, `ALTER TABLE `+table+`_hidden RENAME TO `+table); err != nil {
					t.Fatal(err)
				}
			}
			if n := f.signer.n.Load(); n != signed+1 {
				t.Fatalf("%d signatures for known checkpoints, want none", n-signed-1)
			}
			// Another replica's leaf: this process signs a checkpoint covering it.
			if _, err := f.appendOne(ctx, 1, "other"); err != nil {
				t.Fatal(err)
			}
			if got, err := l.covering(ctx, 4); err != nil || got.Size != 4 {
				t.Fatalf("covering(4) after another replica's append: %v, %v", got, err)
			}

			// A signature begun at size 5 is under way when leaf 5 (size 6)
			// commits and its receipt asks for size 6.
			bs := &blockingSigner{Signer: l.signer, began: make(chan struct{}), release: make(chan struct{})}
			l.signer = bs
			if _, err := f.appendOne(ctx, 0, "five"); err != nil {
				t.Fatal(err)
			}
			first := make(chan error, 1)
			go func() { _, err := l.covering(ctx, 5); first <- err }()
			<-bs.began
			if _, err := f.appendOne(ctx, 0, "six"); err != nil {
				t.Fatal(err)
			}
			second := make(chan *knownCheckpoint, 1)
			go func() {
				c, err := l.covering(ctx, 6)
				if err != nil {
					t.Errorf("covering(6) joining a signature of size 5: %v", err)
				}
				second <- c
			}()
			waitForSingleflightJoin(t)
			close(bs.release)
			if err := <-first; err != nil {
				t.Fatalf("covering(5): %v", err)
			}
			if c := <-second; c == nil || c.Size < 6 {
				t.Fatalf("covering(6) = %+v; want a checkpoint of size ≥ 6", c)
			}
		})
	}
}

// TestLogCheckpointRaceBetweenReplicas: two replicas sign a checkpoint of
// the same size at once; the one that stores second serves the first one's
// note (ECDSA signatures differ each time), so all replicas agree on the
// note of a size.
func TestLogCheckpointRaceBetweenReplicas(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			if _, err := f.appendOne(ctx, 0, "k"); err != nil {
				t.Fatal(err)
			}
			slow := f.logs[1]
			bs := &blockingSigner{Signer: slow.signer, began: make(chan struct{}), release: make(chan struct{})}
			slow.signer = bs
			late := make(chan *knownCheckpoint, 1)
			go func() {
				c, err := slow.signCheckpoint(ctx)
				if err != nil {
					t.Errorf("replica 1: %v", err)
				}
				late <- c
			}()
			<-bs.began // replica 1 read the head and is signing
			first, err := f.logs[0].signCheckpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			close(bs.release)
			second := <-late
			if second == nil || second.Size != first.Size || second.Note != first.Note {
				t.Fatalf("replica 1 serves %+v, replica 0 stored %+v; want the same note", second, first)
			}
			var rows int
			if err := f.stores[0].db.GetContext(ctx, &rows, `SELECT COUNT(*) FROM log_checkpoints`); err != nil || rows != 1 {
				t.Errorf("log_checkpoints rows = %d, %v; want 1", rows, err)
			}
		})
	}
}

// waitForSingleflightJoin waits until a goroutine waits in a singleflight
// call begun by another (hang guard: 10 s).
func waitForSingleflightJoin(t *testing.T) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "sync.(*WaitGroup).Wait") && strings.Contains(g, "singleflight.(*Group).Do") {
				return
			}
		}
	}
	t.Fatal("no caller joined the signature under way")
}

// TestLogForgetsCheckpointOfRestoredDatabase (security review): the
// database is restored from a backup while the process runs, so the log is
// smaller than the checkpoint the process knows and grows again on another
// branch. The known checkpoint of the lost branch must not be served for a
// receipt of the new one.
func TestLogForgetsCheckpointOfRestoredDatabase(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			l := f.logs[0]
			for i := range 6 {
				if _, err := f.appendOne(ctx, 0, fmt.Sprint("old", i)); err != nil {
					t.Fatal(err)
				}
			}
			if k, err := l.covering(ctx, 6); err != nil || k.Size != 6 {
				t.Fatalf("covering(6): %v, %v", k, err)
			}
			// The backup: 4 entries, no checkpoint.
			root4, err := translog.RootHash(ctx, hashStore{f.stores[0].db}, 4)
			if err != nil {
				t.Fatal(err)
			}
			db := f.stores[0].db
			restore := func() {
				t.Helper()
				for _, q := range []string{
					`DELETE FROM log_entries WHERE idx >= 4`,
					fmt.Sprintf(`DELETE FROM log_hashes WHERE idx >= %d`, tlog.StoredHashCount(4)),
					`DELETE FROM log_checkpoints`,
				} {
					if _, err := db.ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE log_head SET size = 4, root = ? WHERE id = 1`), root4[:]); err != nil {
					t.Fatal(err)
				}
			}
			restore()
			// The log grows again, differently, past the known size.
			for i := range 3 {
				if _, err := f.appendOne(ctx, 0, fmt.Sprint("new", i)); err != nil {
					t.Fatal(err)
				}
			}
			// The restored log is smaller than the known checkpoint only
			// until it grows back: the receipt's own check (CheckInclusion
			// in receiptAt, then forget) is what catches the rest. Here the
			// log is 7 > 6, so the signature path does not see it; the
			// receipt path must.
			k, err := l.covering(ctx, 5)
			if err != nil {
				t.Fatal(err)
			}
			proof, err := translog.InclusionProof(ctx, hashStore{db}, 4, k.Size)
			if err == nil {
				leaves, _ := entryStore{db}.ReadEntries(ctx, 4, 5)
				err = translog.CheckInclusion(proof, k.Size, k.hash, 4, translog.LeafHash(leaves[0]))
			}
			if err == nil {
				t.Fatalf("leaf 4 of the new branch checks against the known checkpoint of size %d", k.Size)
			}
			l.forget(k)
			k, err = l.covering(ctx, 5)
			if err != nil || k.Size != 7 {
				t.Fatalf("covering(5) after forgetting: %v, %v; want a new checkpoint of size 7", k, err)
			}
			if root7, err := translog.RootHash(ctx, hashStore{db}, 7); err != nil || root7 != k.hash {
				t.Fatalf("new checkpoint's root %x, the new branch's %x (%v)", k.hash, root7, err)
			}

			// Restored and still smaller than the known checkpoint: signing
			// forgets it at once.
			restore()
			if _, err := f.appendOne(ctx, 0, "newer"); err != nil {
				t.Fatal(err)
			}
			got, err := l.signCheckpoint(ctx)
			if err != nil || got.Size != 5 || l.known.Load() != got {
				t.Fatalf("signCheckpoint after a restore below the known size: %+v, %v; want size 5, known", got, err)
			}
			if k, err := l.covering(ctx, 5); err != nil || k != got {
				t.Fatalf("covering(5) = %+v, %v; want the new checkpoint", k, err)
			}
		})
	}
}

// TestLogKeepsNoDamagedCheckpoint (security review): a log_checkpoints row
// whose note does not verify, or states another size than it is stored
// under, never becomes the known checkpoint a receipt is made against.
func TestLogKeepsNoDamagedCheckpoint(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			l := f.logs[0]
			for i := range 3 {
				if _, err := f.appendOne(ctx, 0, fmt.Sprint("k", i)); err != nil {
					t.Fatal(err)
				}
			}
			k3, err := l.covering(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			db := f.stores[0].db
			for _, row := range []struct {
				size int64
				note string
			}{{50, k3.Note}, {60, "not a note"}} {
				if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO log_checkpoints (size, note, created_at) VALUES (?, ?, ?)`), row.size, row.note, dbTime(time.Now())); err != nil {
					t.Fatal(err)
				}
				if _, err := f.logs[1].latestCheckpoint(ctx); err != nil {
					t.Fatal(err)
				}
				if k := f.logs[1].known.Load(); k != nil {
					t.Fatalf("replica 1 keeps the damaged row of size %d as known: %+v", row.size, k)
				}
				if got, err := l.covering(ctx, 3); err != nil || got != k3 {
					t.Fatalf("covering(3) = %+v, %v; want the good checkpoint", got, err)
				}
			}
		})
	}
}

// TestMemoHashesReadsOnce: within one operation a hash is read from the
// database once, and one just written is not read back.
func TestMemoHashesReadsOnce(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) { testMemoHashesReadsOnce(t, dbName) })
	}
}

func testMemoHashesReadsOnce(t *testing.T, dbName string) {
	ctx := context.Background()
	f := newLogFixture(t, dbName)
	for i := range 5 {
		if _, err := f.appendOne(ctx, 0, fmt.Sprint("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	m := newMemoHashes(f.stores[0].db)
	want, err := translog.RootHash(ctx, m, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.stores[0].Exec(ctx, `ALTER TABLE log_hashes RENAME TO log_hashes_hidden`); err != nil {
		t.Fatal(err)
	}
	if got, err := translog.RootHash(ctx, m, 5); err != nil || got != want {
		t.Fatalf("second RootHash: %x, %v; want %x from memory", got, err, want)
	}
	if _, err := m.ReadHashes(ctx, []int64{1000}); err == nil {
		t.Fatal("a hash never read was served without the database")
	}
	if err := f.stores[0].Exec(ctx, `ALTER TABLE log_hashes_hidden RENAME TO log_hashes`); err != nil {
		t.Fatal(err)
	}
	h := tlog.Hash{7}
	if err := m.WriteHashes(ctx, 1000, []tlog.Hash{h}); err != nil {
		t.Fatal(err)
	}
	if err := f.stores[0].Exec(ctx, `DELETE FROM log_hashes WHERE idx = 1000`); err != nil {
		t.Fatal(err)
	}
	if got, err := m.ReadHashes(ctx, []int64{1000}); err != nil || got[0] != h {
		t.Fatalf("written hash: %x, %v; want it from memory", got, err)
	}
}

// TestLogTamperDetected replays an attacker with write access to the
// database: a changed log_entries row or log_hashes row makes proof
// verification against the signed checkpoint fail, and a damaged tree is
// neither extended nor signed.
func TestLogTamperDetected(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			const n = 13
			for i := range n {
				if _, err := f.appendOne(ctx, 0, fmt.Sprintf("k%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			c := f.openCheckpoint(t, 0)
			db := f.stores[0].db
			verifyEntry := func(i int64) error {
				es, err := f.logs[0].entries(ctx, i, i+1)
				if err != nil {
					return err
				}
				p, err := f.logs[0].inclusionProof(ctx, i, c.Size)
				if err != nil {
					return err
				}
				return translog.CheckInclusion(p, c.Size, c.Hash, i, translog.LeafHash(es[0]))
			}
			for i := range int64(n) {
				if err := verifyEntry(i); err != nil {
					t.Fatalf("untampered entry %d: %v", i, err)
				}
			}

			// 1. A rewritten entry no longer proves inclusion.
			forged, _ := translog.Entry{Version: translog.EntryVersion1, Type: translog.EventAPIKeyCreate, Time: f.clock.now(), Actor: "attacker", KeyID: "k5"}.Marshal()
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE log_entries SET data = ? WHERE idx = ?`), forged, 5); err != nil {
				t.Fatal(err)
			}
			if err := verifyEntry(5); err == nil {
				t.Error("tampered log_entries row 5 still verifies")
			}

			// 2. A rewritten leaf hash breaks its neighbour's inclusion proof.
			var bad [32]byte
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE log_hashes SET hash = ? WHERE idx = ?`), bad[:], tlog.StoredHashIndex(0, 3)); err != nil {
				t.Fatal(err)
			}
			if err := verifyEntry(2); err == nil {
				t.Error("inclusion of entry 2 verifies although the stored hash of leaf 3 was changed")
			}

			// 3. A rewritten subtree hash on the right edge breaks
			// consistency proofs, and the log refuses to extend or sign it.
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE log_hashes SET hash = ? WHERE idx = ?`), bad[:], tlog.StoredHashIndex(2, 2)); err != nil {
				t.Fatal(err)
			}
			if _, err := f.appendOne(ctx, 0, "after tamper"); err == nil {
				t.Error("appendTx extended a tree whose stored hashes do not match the head")
			}
			var size int64
			if err := db.GetContext(ctx, &size, `SELECT size FROM log_head WHERE id = 1`); err != nil || size != n {
				t.Errorf("log_head size = %d, %v; want %d (failed append rolled back)", size, err, n)
			}
			// Force the head forward as an attacker would, and ask for a
			// new checkpoint: the log will not sign.
			if _, err := db.ExecContext(ctx, db.Rebind(`INSERT INTO log_entries (idx, data, created_at) VALUES (?, ?, ?)`), n, forged, f.clock.now()); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE log_head SET size = ? WHERE id = 1`), n+1); err != nil {
				t.Fatal(err)
			}
			f.clock.advance(2 * checkpointInterval)
			before := f.signer.n.Load()
			if _, err := f.logs[0].checkpoint(ctx); err == nil {
				t.Error("checkpoint signed a tree whose stored hashes do not match")
			}
			if f.signer.n.Load() != before {
				t.Error("the signer was called for a damaged tree")
			}
		})
	}
}

func TestLogBounds(t *testing.T) {
	ctx := context.Background()
	f := newLogFixture(t, "sqlite")
	for i := range 3 {
		if _, err := f.appendOne(ctx, 0, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	l := f.logs[0]
	if es, err := l.entries(ctx, 1, 3); err != nil || len(es) != 2 {
		t.Errorf("entries(1, 3) = %d entries, %v; want 2", len(es), err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"entries too many", func() error { _, err := l.entries(ctx, 0, maxLogEntriesPerRead+1); return err }(), ErrInvalid},
		{"entries negative", func() error { _, err := l.entries(ctx, -1, 2); return err }(), ErrInvalid},
		{"entries empty range", func() error { _, err := l.entries(ctx, 2, 2); return err }(), ErrInvalid},
		{"entries beyond", func() error { _, err := l.entries(ctx, 3, 4); return err }(), ErrNotFound},
		{"entries end past the tree is not cut short", func() error { _, err := l.entries(ctx, 1, 100); return err }(), ErrNotFound},
		{"inclusion index = size", func() error { _, err := l.inclusionProof(ctx, 3, 3); return err }(), ErrInvalid},
		{"inclusion size beyond", func() error { _, err := l.inclusionProof(ctx, 0, 4); return err }(), ErrNotFound},
		{"consistency old 0", func() error { _, err := l.consistencyProof(ctx, 0, 3); return err }(), ErrInvalid},
		{"consistency old > new", func() error { _, err := l.consistencyProof(ctx, 3, 2); return err }(), ErrInvalid},
		{"consistency beyond", func() error { _, err := l.consistencyProof(ctx, 1, 4); return err }(), ErrNotFound},
		{"invalid entry", func() error {
			return f.stores[0].inTx(ctx, "t", func(tx *sqlx.Tx) error {
				_, _, err := l.appendTx(ctx, tx, translog.Entry{Type: "bogus"})
				return err
			})
		}(), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("error = %v, want %v", tt.err, tt.want)
			}
		})
	}
	// An unsigned log (no signer) fails closed.
	unsigned := newTransparencyLog(f.stores[0], nil, nil, logTestOrigin, l.log)
	if _, err := unsigned.checkpoint(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("checkpoint without signer: %v, want ErrUnavailable", err)
	}
}

// heldBatch runs item(1) … item(n-1) as one batch of w, issuance commits
// (logged; rerun as given): an item queued first holds the writer until
// they all are. started runs once it holds it, before they queue; a
// statement hook it sets is removed when t ends. heldBatch returns the
// holder's error, then each item's.
func heldBatch(ctx context.Context, t *testing.T, w *writer, n int, rerun bool, started func(), item func(i int) func(*sqlx.Tx) error) []error {
	t.Cleanup(func() { statementHook.Store(nil) })
	var (
		errs             = make([]error, n)
		wg               sync.WaitGroup
		holding, release = make(chan struct{}), make(chan struct{})
	)
	wg.Go(func() {
		errs[0] = w.doItem(&txItem{ctx: ctx, op: "hold", done: make(chan error, 1), fn: func(*sqlx.Tx) error {
			close(holding)
			<-release
			return nil
		}})
	})
	<-holding
	started()
	for i := 1; i < n; i++ {
		wg.Go(func() {
			errs[i] = w.doItem(&txItem{ctx: ctx, op: "append", fn: item(i), done: make(chan error, 1), logged: true, rerun: rerun})
		})
	}
	for len(w.q.ch) < n-1 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	return errs
}

// TestLogBatchAppendsAroundRolledBackItems: one batch of the group commit
// appends for many items, each in its own savepoint, and every third item
// fails after its append (its savepoint is rolled back, taking its leaf
// and hashes with it). The appends after it extend the tree the database
// holds, not the one the failed item left in the batch's memo of hashes
// (txMemo): every other item commits, the log is gap-free, its root is an
// independent RFC 6962 computation's, and the batch's checkpoint verifies.
// The batch reads the tree's stored hashes once, not again for each
// append and for the seal (counted on SQLite; before, each append read
// the frontier of the tree anew).
func TestLogBatchAppendsAroundRolledBackItems(t *testing.T) {
	for _, dbName := range testdb.Names() {
		// rerun: the items may run again (as issuance commits may), so the
		// batch first runs without savepoints and again, with them, around
		// the first refusal (writer.execBatch).
		for _, rerun := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rerun=%t", dbName, rerun), func(t *testing.T) {
				ctx := context.Background()
				f := newLogFixture(t, dbName)
				for i := range 5 { // a tree with a frontier of more than one hash
					if _, err := f.appendOne(ctx, 0, fmt.Sprintf("before-%d", i)); err != nil {
						t.Fatal(err)
					}
				}
				st, l := f.stores[0], f.logs[0]
				lg, hook := test.NewNullLogger()
				l.log = logrus.NewEntry(lg)
				w := st.grouped
				if w == nil {
					w = st.w
				}
				sealed := l.sealed.Load()
				seal := l.sealBatch
				st.sealLog.Store(&seal)
				t.Cleanup(func() { st.sealLog.Store(nil) })

				const n = 12
				refused := errors.New("item refused after its append")
				idxs := make([]int64, n)
				item := func(i int) func(tx *sqlx.Tx) error {
					return func(tx *sqlx.Tx) error {
						var err error
						idxs[i], _, err = l.appendTx(ctx, tx, f.entry(fmt.Sprintf("item-%d", i)))
						if err != nil {
							return err
						}
						if i%3 == 1 {
							return refused
						}
						return nil
					}
				}
				var (
					before               GroupCommitStats
					hashReads, headReads atomic.Int64
				)
				see := func(q string) {
					if dbName == "sqlite" && strings.Contains(q, "FROM log_hashes") {
						hashReads.Add(1)
					}
					if strings.Contains(q, "FROM log_head") {
						headReads.Add(1)
					}
				}
				errs := heldBatch(ctx, t, w, n, rerun, func() {
					before = w.stats()
					statementHook.Store(&see)
				}, item)
				statementHook.Store(nil)
				// Once per transaction: the batch's, and its rerun's.
				runs := int64(1)
				if rerun {
					runs = 2
				}
				if reads := hashReads.Load(); reads > runs {
					t.Errorf("the batch of %d appends read stored hashes %d times, want %d", n-1, reads, runs)
				}
				// The head is read (and locked, on PostgreSQL) by the batch's
				// first append and again after each refused item's rollback
				// only: the transaction holds the head its last append left.
				refusals := int64(0)
				for i := 1; i < n; i++ {
					if i%3 == 1 {
						refusals++
					}
				}
				if reads := headReads.Load(); reads > 1+refusals {
					t.Errorf("the batch of %d appends (%d refused) read the log head %d times, want at most %d", n-1, refusals, reads, 1+refusals)
				}
				if got := w.stats().Reruns - before.Reruns; got != runs-1 {
					t.Errorf("%d batches ran again, want %d", got, runs-1)
				}
				if got := w.stats().Batches - before.Batches; got != 2 {
					t.Fatalf("%d batches ran, want 2 (the holder's, then one of the other %d items)", got, n-1)
				}
				if errs[0] != nil {
					t.Fatalf("the holder: %v", errs[0])
				}
				var want []int64
				for i := 1; i < n; i++ {
					switch {
					case i%3 == 1:
						if !errors.Is(errs[i], refused) {
							t.Errorf("item %d: %v, want its own refusal", i, errs[i])
						}
					case errs[i] != nil:
						t.Errorf("item %d: %v", i, errs[i])
					default:
						want = append(want, idxs[i])
					}
				}
				head, err := l.head(ctx)
				if err != nil {
					t.Fatal(err)
				}
				leaves := f.allEntries(t, head.Size)
				if wantSize := int64(5 + len(want)); head.Size != wantSize {
					t.Errorf("tree size %d, want %d", head.Size, wantSize)
				}
				slices.Sort(want) // the batch runs its items in the order they queued
				for k, idx := range want {
					if idx != int64(5+k) {
						t.Errorf("committed indexes %v: not the gap-free run after the 5 before", want)
						break
					}
				}
				if root := rfc6962Root(leaves); string(root[:]) != string(head.Root) {
					t.Error("the head's root is not the RFC 6962 root of the committed leaves")
				}
				if l.sealed.Load() != sealed+1 {
					t.Fatalf("the batch was not sealed: %v", hook.AllEntries())
				}
				k := l.known.Load()
				c, err := translog.OpenCheckpoint([]byte(k.Note), f.verifier)
				if err != nil || c.Size != head.Size || string(c.Hash[:]) != string(head.Root) {
					t.Errorf("the batch's checkpoint %+v, %v; want the head of size %d", c, err, head.Size)
				}
			})
		}
	}
}

// gatedSigner is a note.Signer that says when a signature begins.
type gatedSigner struct {
	note.Signer
	began chan struct{}
}

func (s *gatedSigner) Sign(msg []byte) ([]byte, error) {
	select {
	case s.began <- struct{}{}:
	default:
	}
	return s.Signer.Sign(msg)
}

// TestSealSignsWhileTheStatementsRun: on PostgreSQL a batch of issuance
// commits sends its items' statements as one (batchplan.go), a round trip
// in which the backend does the batch's work, and the seal's signatures
// begin before it is sent, so that the token signs while PostgreSQL runs
// them (docs/performance.md, "The seal beside PostgreSQL's statements").
// Here the batch's statement is held until a signature has begun: the code
// before, which signed once the statements had run, held it in vain. The
// batch commits with its checkpoint. A batch whose statement then fails —
// a guard that misses, or the statement as a whole (a duplicate key) —
// drops the seal it began (stored nowhere, kept nowhere): its items run
// again without the failed one, and the one checkpoint kept is that of the
// tree committed.
func TestSealSignsWhileTheStatementsRun(t *testing.T) {
	for _, failure := range []string{"none", "guard-misses", "statement-fails"} {
		t.Run(failure, func(t *testing.T) {
			missing := failure != "none"
			ctx := context.Background()
			f := newLogFixture(t, "postgres")
			if _, err := f.appendOne(ctx, 0, "before"); err != nil {
				t.Fatal(err)
			}
			st, l := f.stores[0], f.logs[0]
			if _, err := st.db.ExecContext(ctx, `CREATE TABLE seal_guard (id INTEGER PRIMARY KEY); INSERT INTO seal_guard VALUES (7)`); err != nil {
				t.Fatal(err)
			}
			gate := &gatedSigner{Signer: l.signer, began: make(chan struct{}, 1)}
			l.signer = gate
			sealed := l.sealed.Load()
			var dropped, kept atomic.Int64 // the seals that ended each way
			seal := func(ctx context.Context, tx *sqlx.Tx, early bool) batchSeal {
				s := l.sealBatch(ctx, tx, early)
				if s == nil {
					return nil
				}
				return func(store bool) func() {
					if store {
						kept.Add(1)
					} else {
						dropped.Add(1)
					}
					return s(store)
				}
			}
			st.sealLog.Store(&seal)
			t.Cleanup(func() { st.sealLog.Store(nil) })
			w := st.grouped

			const n = 4
			refused := errors.New("the guard missed")
			item := func(i int) func(tx *sqlx.Tx) error {
				return func(tx *sqlx.Tx) error {
					if _, _, err := l.appendTx(ctx, tx, f.entry(fmt.Sprintf("item-%d", i))); err != nil {
						return err
					}
					switch {
					case failure == "guard-misses" && i == 2: // no row 1: the guard changes none
						miss := guard{stmt: stmt{`UPDATE seal_guard SET id = id WHERE id = ?`, []any{1}}, miss: func() error { return refused }}
						return execPlan(ctx, tx, "seal test", []guard{miss}, nil)
					case failure == "statement-fails" && i == 2: // row 7 exists
						return execPlan(ctx, tx, "seal test", nil, []stmt{{`INSERT INTO seal_guard (id) VALUES (?)`, []any{7}}})
					}
					return nil
				}
			}
			// The batch's one statement (its first run's) waits for a
			// signature to begin, for a minute at most: without it the test
			// fails instead of hanging.
			var held, unheld atomic.Int64
			see := func(q string) {
				if !strings.Contains(q, "INSERT INTO log_entries") || held.Add(1) > 1 {
					return
				}
				select {
				case <-gate.began:
				case <-time.After(time.Minute):
					unheld.Add(1)
				}
			}
			errs := heldBatch(ctx, t, w, n, true, func() { statementHook.Store(&see) }, item)
			statementHook.Store(nil)
			if unheld.Load() > 0 {
				t.Fatal("the batch's statement was sent and no signature of its checkpoint had begun")
			}
			for i, err := range errs {
				switch {
				case !missing || i != 2:
					if err != nil {
						t.Errorf("item %d: %v", i, err)
					}
				case failure == "guard-misses" && !errors.Is(err, refused):
					t.Errorf("item %d: %v, want its guard's miss", i, err)
				case failure == "statement-fails" && (err == nil || !strings.Contains(err.Error(), "seal test")):
					t.Errorf("item %d: %v, want its duplicate key", i, err)
				}
			}
			// The first run's seal began early; a failed run dropped it, and
			// the rerun (each item in a savepoint) sealed after its items.
			wantDropped := int64(0)
			if missing {
				wantDropped = 1
			}
			if dropped.Load() != wantDropped || kept.Load() != 1 {
				t.Errorf("seals dropped %d, stored %d; want %d, 1", dropped.Load(), kept.Load(), wantDropped)
			}
			head, err := l.head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantSize := int64(1 + n - 1)
			if missing {
				wantSize--
			}
			if head.Size != wantSize {
				t.Fatalf("tree size %d, want %d", head.Size, wantSize)
			}
			if got := l.sealed.Load() - sealed; got != 1 {
				t.Fatalf("%d checkpoints sealed with a batch, want 1", got)
			}
			k := l.known.Load()
			c, err := translog.OpenCheckpoint([]byte(k.Note), f.verifier)
			if err != nil || c.Size != head.Size || string(c.Hash[:]) != string(head.Root) {
				t.Errorf("the checkpoint kept %+v, %v; want the committed head of size %d", c, err, head.Size)
			}
			var stored []int64
			if err := st.db.SelectContext(ctx, &stored, `SELECT size FROM log_checkpoints WHERE size > 1 ORDER BY size`); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(stored, []int64{head.Size}) {
				t.Errorf("stored checkpoints of sizes %v after the first leaf, want only the committed tree's %d", stored, head.Size)
			}
		})
	}
}

// TestTxMemoGivesOnlyItsTree: a transaction's memo of hashes is used for
// the next append only for a head its tree extends and only when it gives
// that head's root: a larger head (another writer's append) or a memo that
// does not give the root (here a hash written into it) starts a fresh one,
// a smaller head (a rolled-back savepoint) drops what lies beyond it, and
// the append extends the tree the database holds instead of refusing it.
func TestTxMemoGivesOnlyItsTree(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			l := f.logs[0]
			err := f.stores[0].inOwnTx(ctx, "memo test", func(tx *sqlx.Tx) error {
				var heads []logHead // after each append
				for i := range 3 {
					if _, _, err := l.appendTx(ctx, tx, f.entry(fmt.Sprintf("k%d", i))); err != nil {
						return err
					}
					head, err := headIn(ctx, tx)
					if err != nil {
						return err
					}
					heads = append(heads, head)
				}
				head := heads[2]
				hs := l.txMemo(ctx, tx, head)
				if hs != l.txHashes.hs {
					t.Error("the memo of the transaction's own tree was not kept")
				}
				// A larger head is another writer's append: the memo is not
				// used, even where the root it gives would match.
				if l.txMemo(ctx, tx, logHead{Size: head.Size + 1, Root: head.Root}) == hs {
					t.Error("a memo was kept for a head larger than its tree")
				}
				hs = l.txMemo(ctx, tx, head)
				// A smaller head is a rolled-back savepoint: what the memo
				// holds beyond it is dropped, the rest kept.
				if l.txMemo(ctx, tx, heads[1]) != hs {
					t.Error("the memo was not kept for a head its tree extends")
				}
				for idx := range hs.m {
					if idx >= tlog.StoredHashCount(heads[1].Size) {
						t.Errorf("hash %d of the rolled-back leaf is still in the memo", idx)
					}
				}
				hs.m[tlog.StoredHashIndex(1, 0)] = tlog.Hash{1} // the frontier of size 2: [0,2)
				if l.txMemo(ctx, tx, heads[1]) == hs {
					t.Error("a memo that does not give the head's root was kept")
				}
				_, _, err := l.appendTx(ctx, tx, f.entry("k3"))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			head, err := l.head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if root := rfc6962Root(f.allEntries(t, head.Size)); head.Size != 4 || string(root[:]) != string(head.Root) {
				t.Errorf("head %d: not the RFC 6962 root of 4 leaves", head.Size)
			}
		})
	}
}

// TestAppendRefusedOnAStaleHead: an append that takes the head its
// transaction's last append wrote (txHead) is refused when log_head holds
// another tree of that size — the case of a rollback the log was not told
// of, after which another replica appended — instead of writing a head
// whose root mixes in a leaf that never committed: the head's UPDATE names
// the root it extends, not only the size (review of the eleventh pass).
func TestAppendRefusedOnAStaleHead(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			f := newLogFixture(t, dbName)
			for i := range 3 {
				if _, err := f.appendOne(ctx, 0, fmt.Sprintf("before-%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			st, l := f.stores[0], f.logs[0]
			other := bytes.Repeat([]byte{0x01}, 32)
			err := st.inOwnTx(ctx, "stale head", func(tx *sqlx.Tx) error {
				if _, _, err := l.appendTx(ctx, tx, f.entry("first")); err != nil {
					return fmt.Errorf("first append: %w", err)
				}
				if _, ok := l.txHead(tx); !ok {
					return errors.New("the transaction does not hold the head its append wrote")
				}
				// Another tree of the same size (what another replica's append
				// after a lost lock would leave).
				if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE log_head SET root = ? WHERE id = 1`), other); err != nil {
					return err
				}
				_, _, err := l.appendTx(ctx, tx, f.entry("second"))
				if !errors.Is(err, ErrConflict) {
					return fmt.Errorf("append on a stale head: %v, want ErrConflict", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
