package procstat

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// statLine is a /proc/PID/stat line with the given command name, parent and
// CPU times (the other fields as a live process has them).
func statLine(comm string, ppid int, utime, stime, cutime, cstime uint64) string {
	return statLineStarted(comm, ppid, 123456, utime, stime, cutime, cstime)
}

// statLineStarted is statLine of a process that started at start.
func statLineStarted(comm string, ppid int, start, utime, stime, cutime, cstime uint64) string {
	return fmt.Sprintf("4242 (%s) S %d 4242 4242 0 -1 4194560 1200 0 0 0 %d %d %d %d 20 0 9 0 %d 1234567 890 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n",
		comm, ppid, utime, stime, cutime, cstime, start)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Stat
		wantErr string
	}{
		{"plain", statLine("atr", 1, 120, 30, 5, 2), Stat{PPID: 1, UTime: 120, STime: 30, CUTime: 5, CSTime: 2, StartTime: 123456}, ""},
		{"a name with spaces and parentheses", statLine("a) (b c) 9 9", 77, 1, 2, 3, 4), Stat{PPID: 77, UTime: 1, STime: 2, CUTime: 3, CSTime: 4, StartTime: 123456}, ""},
		{"no command name", "4242 atr S 1 2 3", Stat{}, "no command name"},
		{"cut short", "4242 (atr) S 1 4242 4242 0 -1 4194560 1200 0 0 0 12 3 0 0 20 0 9 0", Stat{}, "want at least 20"},
		{"a time that is not a number", strings.Replace(statLine("atr", 1, 120, 30, 5, 2), " 120 ", " 12x ", 1), Stat{}, "field 14"},
		{"a parent that is not a number", strings.Replace(statLine("atr", 1, 1, 2, 3, 4), ") S 1 ", ") S x ", 1), Stat{}, "field 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseStat(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseStat(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine("atr", 1, 120, 30, 5, 2)))
	f.Add([]byte(statLine("x) (y", 2, 0, 0, 0, 0)))
	f.Add([]byte("1 (a) S"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(b)
		if err != nil && s != (Stat{}) {
			t.Fatalf("an error with a value: %+v, %v", s, err)
		}
	})
}

func TestPGProcess(t *testing.T) {
	pad := func(s string) []byte { return []byte(s + strings.Repeat(" ", 40)) } // titles are padded
	tests := []struct {
		title   []byte
		db      string
		wantVac bool
		wantOK  bool
	}{
		{pad("postgres: 15/main: postgres atr_peer 127.0.0.1(51234) idle"), "atr_peer", false, true},
		{pad("postgres: postgres atr_peer 127.0.0.1(51234) INSERT"), "atr_peer", false, true},
		{pad("postgres: 15/main: atr bench_db [local] idle in transaction"), "bench_db", false, true},
		{pad("postgres: 15/main: postgres atr_peer [::1](40000) COMMIT waiting"), "atr_peer", false, true},
		{pad("postgres: 15/main: autovacuum worker atr_peer"), "atr_peer", true, true},
		{pad("postgres: autovacuum worker atr_peer"), "atr_peer", true, true},
		{pad("postgres: 15/main: checkpointer"), "", false, false},
		{pad("postgres: 15/main: background writer"), "", false, false},
		{pad("postgres: 15/main: logical replication launcher"), "", false, false},
		{pad("postgres: 15/main: autovacuum launcher"), "", false, false},
		{pad("postgres: 15/main: walwriter"), "", false, false},
		{[]byte("/usr/lib/postgresql/15/bin/postgres\x00-D\x00/var/lib/postgresql/15/main\x00"), "", false, false},
		{[]byte("atr\x00serve\x00"), "", false, false},
		{nil, "", false, false},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(string(tt.title)), func(t *testing.T) {
			db, vac, ok := PGProcess(tt.title)
			if db != tt.db || vac != tt.wantVac || ok != tt.wantOK {
				t.Fatalf("PGProcess = %q, %v, %v; want %q, %v, %v", db, vac, ok, tt.db, tt.wantVac, tt.wantOK)
			}
		})
	}
}

// fakeProc is a /proc in a temporary directory.
type fakeProc struct {
	t  *testing.T
	fs FS
}

func newFakeProc(t *testing.T) *fakeProc {
	return &fakeProc{t: t, fs: FS(t.TempDir())}
}

func (p *fakeProc) set(pid, ppid int, title string, utime, stime, cutime, cstime uint64) {
	p.t.Helper()
	p.setStarted(pid, ppid, 123456, title, utime, stime, cutime, cstime)
}

// setStarted is set of a process that started at start.
func (p *fakeProc) setStarted(pid, ppid int, start uint64, title string, utime, stime, cutime, cstime uint64) {
	p.t.Helper()
	dir := filepath.Join(string(p.fs), strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(statLineStarted("p", ppid, start, utime, stime, cutime, cstime)), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cmdline"), []byte(title), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) exit(pid int) {
	p.t.Helper()
	if err := os.RemoveAll(filepath.Join(string(p.fs), strconv.Itoa(pid))); err != nil {
		p.t.Fatal(err)
	}
}

func TestTreeTicks(t *testing.T) {
	p := newFakeProc(t)
	p.set(10, 1, "atr", 100, 50, 7, 3)   // the root: 160
	p.set(11, 10, "child", 20, 10, 0, 0) // 30
	p.set(12, 11, "grandchild", 5, 5, 0, 0)
	p.set(13, 1, "not ours", 1000, 1000, 0, 0)
	if got, want := p.fs.TreeTicks(10), uint64(160+30+10); got != want {
		t.Errorf("TreeTicks(10) = %d, want %d", got, want)
	}
	if got := p.fs.TreeTicks(99); got != 0 {
		t.Errorf("TreeTicks of a missing process = %d, want 0", got)
	}
}

func TestMachine(t *testing.T) {
	p := newFakeProc(t)
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 2 30 500 40 1 2 3 50 0\ncpu0 50 1 15 250 20 0 1 1 25 0\n"
	if err := os.WriteFile(filepath.Join(string(p.fs), "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	got := p.fs.Machine()
	want := MachineTicks{Busy: 100 + 2 + 30 + 1 + 2 + 3, Total: 100 + 2 + 30 + 500 + 40 + 1 + 2 + 3}
	if got != want {
		t.Errorf("Machine() = %+v, want %+v", got, want)
	}
}

// TestWatchPGBackends: the watch counts the backends of its database from
// the start (or their birth), keeps what a backend used up to the last poll
// that saw it, and leaves out other databases and other processes.
func TestWatchPGBackends(t *testing.T) {
	p := newFakeProc(t)
	const title = "postgres: 15/main: postgres %s 127.0.0.1(5%d) idle"
	p.set(100, 1, fmt.Sprintf(title, "atr_peer", 100), 500, 100, 0, 0) // before the start: 600
	p.set(101, 1, fmt.Sprintf(title, "other", 101), 10, 10, 0, 0)
	p.set(102, 1, "postgres: 15/main: walwriter", 10, 10, 0, 0)
	p.set(103, 1, fmt.Sprintf(title, "atr_peer", 103), 40, 0, 0, 0)    // exits in the window
	w := p.fs.WatchPGBackends("atr_peer", time.Hour)                   // polls only at the start and the stop here
	p.set(100, 1, fmt.Sprintf(title, "atr_peer", 100), 530, 110, 0, 0) // +40
	p.set(101, 1, fmt.Sprintf(title, "other", 101), 500, 500, 0, 0)
	p.set(102, 1, "postgres: 15/main: walwriter", 500, 500, 0, 0)
	p.set(103, 1, fmt.Sprintf(title, "atr_peer", 103), 45, 0, 0, 0) // +5, seen by the poll below
	w.poll(false)
	p.exit(103)
	p.set(104, 1, "postgres: 15/main: autovacuum worker atr_peer", 6, 1, 0, 0) // born in the window: +7
	w.poll(false)
	// A new backend under 100's pid, started later: counted from 0, and
	// 100's own CPU up to its last poll stays counted.
	p.setStarted(100, 1, 999999, fmt.Sprintf(title, "atr_peer", 100), 3, 0, 0, 0) // +3
	want := PGUse{Backends: 40 + 5 + 3, Autovacuum: 7, NBackends: 3, NAutovacuum: 1}
	if got := w.Stop(); got != want {
		t.Errorf("Stop() = %+v; want %+v", got, want)
	}
}

// TestProcSeesThisProcess reads the machine's /proc: this process's CPU
// grows while it works, and is in its tree's.
func TestProcSeesThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux's /proc")
	}
	pid := os.Getpid()
	before, err := Proc.Stat(pid)
	if err != nil {
		t.Fatalf("Proc.Stat(self): %v", err)
	}
	if before.PPID != os.Getppid() {
		t.Errorf("PPID = %d, want %d", before.PPID, os.Getppid())
	}
	sum := sha256.Sum256(nil)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
		if after, err := Proc.Stat(pid); err == nil && after.Ticks() >= before.Ticks()+3 {
			if tree := Proc.TreeTicks(pid); tree < after.Ticks() {
				t.Errorf("TreeTicks(self) = %d, below the process's own %d", tree, after.Ticks())
			}
			if m := Proc.Machine(); m.Busy == 0 || m.Total < m.Busy {
				t.Errorf("Machine() = %+v", m)
			}
			return
		}
	}
	t.Fatalf("5 s of hashing did not move this process's CPU time past %d ticks", before.Ticks()+3)
}
