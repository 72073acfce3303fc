// Package procstat reads CPU time from Linux's /proc for the benchmark tools
// (cmd/atr-bench, cmd/atr-peerbench): a process's own, a process tree's, the
// machine's, and that of the PostgreSQL backends serving one database. It is
// measurement code only; no part of the system under test imports it.
//
// Times are in clock ticks (USER_HZ, 100 a second on Linux); Duration turns a
// count into a time.Duration.
package procstat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TicksPerSecond is USER_HZ, the unit of /proc's CPU times on Linux.
const TicksPerSecond = 100

// Duration is n clock ticks as a time.Duration.
func Duration(n uint64) time.Duration { return time.Duration(n) * (time.Second / TicksPerSecond) }

// Stat is what the benchmarks read of /proc/PID/stat (proc(5)).
type Stat struct {
	PPID int
	// UTime and STime are the process's own CPU time; CUTime and CSTime
	// what its exited children that it waited for used.
	UTime, STime, CUTime, CSTime uint64
	// StartTime is when the process started (clock ticks since boot): a
	// pid and its start time name one process, where a pid alone may be
	// reused.
	StartTime uint64
}

// Ticks is the process's own CPU time.
func (s Stat) Ticks() uint64 { return s.UTime + s.STime }

// ParseStat parses the text of /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses, so the fields are counted from its last
// ')'.
func ParseStat(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, errors.New("procstat: stat has no command name")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("procstat: stat has %d fields after the command name, want at least 20", len(f))
	}
	field := func(k int) (uint64, error) { return strconv.ParseUint(f[k-3], 10, 64) }
	var s Stat
	var err error
	if s.PPID, err = strconv.Atoi(f[4-3]); err != nil {
		return Stat{}, fmt.Errorf("procstat: stat field 4: %w", err)
	}
	for k, dst := range map[int]*uint64{14: &s.UTime, 15: &s.STime, 16: &s.CUTime, 17: &s.CSTime, 22: &s.StartTime} {
		if *dst, err = field(k); err != nil {
			return Stat{}, fmt.Errorf("procstat: stat field %d: %w", k, err)
		}
	}
	return s, nil
}

// FS is a /proc file system; Proc is the machine's.
type FS string

// Proc is the machine's /proc.
const Proc FS = "/proc"

// Stat reads the stat of process pid.
func (fs FS) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(string(fs), strconv.Itoa(pid), "stat"))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(b)
}

// pids lists the processes of fs.
func (fs FS) pids() []int {
	ents, _ := os.ReadDir(string(fs))
	pids := make([]int, 0, len(ents))
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TreeTicks is the CPU time of root and every live descendant, plus what
// their exited children that they waited for used.
func (fs FS) TreeTicks(root int) uint64 {
	children := map[int][]int{}
	stats := map[int]Stat{}
	for _, pid := range fs.pids() {
		if st, err := fs.Stat(pid); err == nil {
			stats[pid] = st
			children[st.PPID] = append(children[st.PPID], pid)
		}
	}
	var sum uint64
	seen := map[int]bool{}
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		if st, ok := stats[p]; ok {
			sum += st.Ticks() + st.CUTime + st.CSTime
		}
		for _, ch := range children[p] {
			walk(ch)
		}
	}
	walk(root)
	return sum
}

// Self is the CPU time (user and system, all threads) this process has used
// so far, from getrusage(2).
func Self() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// MachineTicks is the machine's CPU time since boot, all processors: Busy
// is Total less idle and I/O wait.
type MachineTicks struct{ Busy, Total uint64 }

// Machine reads the machine's CPU time (the "cpu" line of /proc/stat).
func (fs FS) Machine() MachineTicks {
	f, err := os.Open(filepath.Join(string(fs), "stat"))
	if err != nil {
		return MachineTicks{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return MachineTicks{}
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 2 || fields[0] != "cpu" {
		return MachineTicks{}
	}
	var m MachineTicks
	for i, s := range fields[1:] {
		if i >= 8 { // guest time is already in user
			break
		}
		v, _ := strconv.ParseUint(s, 10, 64)
		m.Total += v
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += v
		}
	}
	return m
}

// PGProcess is what a PostgreSQL process works for, from its process title
// (/proc/PID/cmdline, update_process_title): a client backend, "postgres:
// USER DATABASE HOST(PORT) STATE", or an autovacuum worker, "postgres:
// autovacuum worker DATABASE" (vacuuming what the clients wrote), either
// with a cluster name after "postgres: " (Debian's "15/main: "). ok is false
// for other processes and for the server's own (the checkpointer, the WAL
// writer, …), which work for every database.
func PGProcess(cmdline []byte) (db string, autovacuum, ok bool) {
	title := string(bytes.TrimRight(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), " "))
	rest, found := strings.CutPrefix(title, "postgres: ")
	if !found {
		return "", false, false
	}
	f := strings.Fields(rest)
	if len(f) > 0 && strings.HasSuffix(f[0], ":") {
		f = f[1:] // the cluster name
	}
	if len(f) >= 3 && f[0] == "autovacuum" && f[1] == "worker" {
		return f[2], true, true
	}
	// USER DATABASE HOST(PORT)|[local] STATE…
	if len(f) < 3 || !(f[2] == "[local]" || strings.HasSuffix(f[2], ")")) {
		return "", false, false
	}
	return f[1], false, true
}

// PGUse is the CPU (clock ticks) of one database's client backends and of
// its autovacuum workers, and how many of each were seen.
type PGUse struct {
	Backends, Autovacuum   uint64
	NBackends, NAutovacuum int
}

// Ticks is the CPU of the backends and the autovacuum workers together.
func (u PGUse) Ticks() uint64 { return u.Backends + u.Autovacuum }

// PGWatch sums the CPU of the PostgreSQL processes of one database. Parallel
// workers ("postgres: parallel worker for PID N") name no database and are
// not counted.
type PGWatch struct {
	fs    FS
	db    string
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	first map[proc]uint64 // a process's CPU when first seen (0: born since the start)
	last  map[proc]uint64 // its CPU at the last poll that saw it
	vac   map[proc]bool   // the autovacuum workers among them
}

// proc names one process: its pid and start time.
type proc struct {
	pid   int
	start uint64
}

// WatchPGBackends starts polling fs every interval for the client backends
// and autovacuum workers of database db. A process's CPU counts from the
// start, or from its birth if it started later, to the last poll that saw
// it: one that exits loses at most its last interval. Stop ends the watch.
func (fs FS) WatchPGBackends(db string, interval time.Duration) *PGWatch {
	w := &PGWatch{fs: fs, db: db, done: make(chan struct{}), first: map[proc]uint64{}, last: map[proc]uint64{}, vac: map[proc]bool{}}
	w.poll(true)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tk.C:
				w.poll(false)
			}
		}
	}()
	return w
}

func (w *PGWatch) poll(initial bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pid := range w.fs.pids() {
		cl, err := os.ReadFile(filepath.Join(string(w.fs), strconv.Itoa(pid), "cmdline"))
		if err != nil {
			continue
		}
		db, vac, ok := PGProcess(cl)
		if !ok || db != w.db {
			continue
		}
		st, err := w.fs.Stat(pid)
		if err != nil {
			continue
		}
		p := proc{pid, st.StartTime}
		if _, seen := w.first[p]; !seen {
			w.first[p] = 0
			if initial {
				w.first[p] = st.Ticks()
			}
		}
		w.last[p] = st.Ticks()
		w.vac[p] = vac
	}
}

// Stop polls a last time, ends the watch and returns what the database's
// processes used. It may be called once.
func (w *PGWatch) Stop() PGUse {
	close(w.done)
	w.wg.Wait()
	w.poll(false)
	w.mu.Lock()
	defer w.mu.Unlock()
	var u PGUse
	for p, t := range w.last {
		d := t - w.first[p]
		if w.vac[p] {
			u.Autovacuum += d
			u.NAutovacuum++
		} else {
			u.Backends += d
			u.NBackends++
		}
	}
	return u
}
