package registry

import (
	"testing"

	"github.com/sirupsen/logrus"
)

// TestSealedCheckpointsForReceipts: a fresh receipt's checkpoint is the
// smallest recently sealed one that covers its leaf (its own batch's, even
// after later batches sealed), only the last recentSealed are kept, and
// forgetting a checkpoint that does not match the stored tree drops them
// all and a known checkpoint at least as large.
func TestSealedCheckpointsForReceipts(t *testing.T) {
	l := &transparencyLog{log: logrus.NewEntry(logrus.New())}
	cp := func(size int64) *knownCheckpoint {
		return &knownCheckpoint{storedCheckpoint: storedCheckpoint{Size: size}}
	}
	sealed := map[int64]*knownCheckpoint{}
	for size := int64(3); size <= 30; size += 3 { // 10 batches of 3 leaves
		k := cp(size)
		sealed[size] = k
		l.remember(k)
		l.rememberSealed(k)
	}
	for _, tc := range []struct {
		minSize, want int64 // want 0: none kept covers it
	}{
		// 3 and 6 are no longer kept: the smallest kept is 9.
		{30, 30}, {28, 30}, {27, 27}, {13, 15}, {10, 12}, {9, 9}, {3, 9}, {1, 9}, {31, 0},
	} {
		got := l.sealedCovering(tc.minSize)
		switch {
		case tc.want == 0 && got != nil:
			t.Errorf("sealedCovering(%d) = size %d, want none", tc.minSize, got.Size)
		case tc.want != 0 && got != sealed[tc.want]:
			t.Errorf("sealedCovering(%d) = %v, want the checkpoint of size %d", tc.minSize, got, tc.want)
		}
	}
	// A receipt against the sealed checkpoint of size 15 found the stored
	// tree different: that and every kept one go, and the known one (30).
	l.forget(sealed[15])
	if got := l.sealedCovering(15); got != nil {
		t.Errorf("after forget: sealedCovering(15) = size %d, want none", got.Size)
	}
	if k := l.known.Load(); k != nil {
		t.Errorf("after forget: known checkpoint of size %d kept", k.Size)
	}
	// A known checkpoint smaller than the one forgotten is another tree's
	// and stays.
	small := cp(6)
	l.remember(small)
	l.forget(cp(9))
	if l.known.Load() != small {
		t.Error("forget dropped a known checkpoint smaller than the one forgotten")
	}
}
