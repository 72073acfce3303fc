package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
)

// Row is one figure of the report. Value is in Unit; latencies are in
// milliseconds. Ratio is Value (or, for latency rows, P99) divided by the
// named baseline's value, when there is one. Unavailable rows carry a Note
// saying why and no numbers.
type Row struct {
	Group       string   `json:"group"`
	Name        string   `json:"name"`
	Value       float64  `json:"value"`
	Unit        string   `json:"unit"`
	N           int      `json:"n,omitempty"`
	Errors      int      `json:"errors,omitempty"`
	P50ms       float64  `json:"p50_ms,omitempty"`
	P95ms       float64  `json:"p95_ms,omitempty"`
	P99ms       float64  `json:"p99_ms,omitempty"`
	Ratio       *float64 `json:"ratio,omitempty"`
	RatioTo     string   `json:"ratio_to,omitempty"`
	Target      string   `json:"target,omitempty"`
	Met         *bool    `json:"met,omitempty"`
	Unavailable bool     `json:"unavailable,omitempty"`
	Note        string   `json:"note,omitempty"`
}

// Report is the whole run, printed as a table or as JSON.
type Report struct {
	Started   time.Time `json:"started"`
	Duration  float64   `json:"duration_s"`
	Mode      string    `json:"mode"` // "quick" or "full"
	Database  string    `json:"database"`
	Target    string    `json:"target"`
	Cores     int       `json:"cores"`
	GoVersion string    `json:"go_version"`
	Rows      []Row     `json:"rows"`
	Notes     []string  `json:"notes,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rateRow is a throughput row from s.
func rateRow(group, name string, s Stats) Row {
	r := Row{Group: group, Name: name, Value: s.Rate(), Unit: "ops/s", N: s.N, Errors: s.Errors,
		P50ms: ms(s.P50), P95ms: ms(s.P95), P99ms: ms(s.P99)}
	if s.FirstErr != nil {
		r.Note = "first error: " + oneLine(s.FirstErr.Error())
	}
	return r
}

// withUse notes on r what its phase's timed window used: the connections
// its clients opened (each a TLS handshake the server paid inside the
// window) and, per request served (r.N), the CPU of atr serve, of its
// PostgreSQL database's client backends and autovacuum workers (when the
// bench made the database), and of this load generator, which shares the
// cores.
func (r Row) withUse(u phaseUse) Row {
	note := fmt.Sprintf("connections opened while timed: %d", u.opened)
	if r.N > 0 {
		per := func(d time.Duration) string { return sig3(float64(d.Microseconds()) / 1000 / float64(r.N)) }
		srv := "atr serve unknown"
		if u.cpu.serverOK {
			srv = "atr serve " + per(u.cpu.server) + " ms"
		}
		if db := u.db; db.watched {
			ticks := func(n uint64) string { return per(procstat.Duration(n)) }
			switch {
			case db.NBackends+db.NAutovacuum == 0:
				srv += ", PostgreSQL backends unseen (not on this machine)"
			default:
				srv += fmt.Sprintf(", PostgreSQL backends %s ms (%d)", ticks(db.Backends), db.NBackends)
				if db.NAutovacuum > 0 {
					srv += fmt.Sprintf(" and autovacuum %s ms (%d)", ticks(db.Autovacuum), db.NAutovacuum)
				}
				if u.cpu.serverOK {
					srv += ", together " + per(u.cpu.server+procstat.Duration(db.Ticks())) + " ms"
				}
			}
		}
		note += fmt.Sprintf("; CPU per request: %s, load generator %s ms", srv, per(u.cpu.self))
	}
	if r.Note != "" {
		note = r.Note + "; " + note
	}
	r.Note = note
	return r
}

// latencyRow is a row whose figure is a latency (p50 in Value, in ms).
func latencyRow(group, name string, s Stats) Row {
	r := rateRow(group, name, s)
	r.Value, r.Unit = ms(s.P50), "ms p50"
	return r
}

func unavailable(group, name, why string) Row {
	return Row{Group: group, Name: name, Unavailable: true, Note: why}
}

// withRatio sets r's ratio to num/den against the named baseline and, when
// target is not empty, whether the ratio meets it: ">=x" or "<=x".
func (r Row) withRatio(num, den float64, to, target string) Row {
	if den <= 0 || r.Unavailable || math.IsNaN(num) {
		return r
	}
	v := num / den
	r.Ratio, r.RatioTo, r.Target = &v, to, target
	if target != "" {
		var want float64
		var met bool
		switch {
		case strings.HasPrefix(target, ">="):
			fmt.Sscan(target[2:], &want)
			met = v >= want
		case strings.HasPrefix(target, "<="):
			fmt.Sscan(target[2:], &want)
			met = v <= want
		default:
			return r
		}
		r.Met = &met
	}
	return r
}

// find returns the first row with the given group and name.
func (rep *Report) find(group, name string) (Row, bool) {
	for _, r := range rep.Rows {
		if r.Group == group && r.Name == name {
			return r, !r.Unavailable
		}
	}
	return Row{}, false
}

func (rep *Report) add(rows ...Row) { rep.Rows = append(rep.Rows, rows...) }

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// readReport reads a report that WriteJSON wrote.
func readReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep Report
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("%s: not a report of atr-bench --json: %v", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: more than one report of atr-bench --json (or trailing data) after the first", path)
	}
	if rep.Mode == "" || len(rep.Rows) == 0 {
		return nil, fmt.Errorf("%s: not a report of atr-bench --json: no mode or no rows", path)
	}
	return &rep, nil
}

// WriteMarkdown writes the report as docs/performance.md carries it: a line
// naming the run, a table with three significant digits (a missed target
// in bold), and the notes as a list.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	fmt.Fprintf(w, "_%s run, %s, %d cores, %s, %.0f s, started %s_\n\n", rep.Mode, rep.Database, rep.Cores, rep.GoVersion,
		rep.Duration, rep.Started.UTC().Format(time.RFC3339))
	fmt.Fprintln(w, "| group | figure | value | p50 ms | p99 ms | ratio | vs | target |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	cell := func(s string) string { return strings.NewReplacer("\n", " ", "|", "\\|").Replace(s) }
	for _, r := range rep.Rows {
		if r.Unavailable {
			fmt.Fprintf(w, "| %s | %s | unavailable: %s |  |  |  |  |  |\n", cell(r.Group), cell(r.Name), cell(r.Note))
			continue
		}
		value := sig3(r.Value) + " " + cell(r.Unit)
		switch {
		case r.Errors == 1:
			value += " (1 error)"
		case r.Errors > 1:
			value += fmt.Sprintf(" (%d errors)", r.Errors)
		}
		ratio, target := "", r.Target
		if r.Ratio != nil {
			ratio = sig3(*r.Ratio)
		}
		if r.Met != nil {
			if *r.Met {
				target += " met"
			} else {
				target += " **missed**"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", cell(r.Group), cell(r.Name), value,
			sig3Lat(r.P50ms), sig3Lat(r.P99ms), ratio, cell(r.RatioTo), target)
	}
	var notes []string
	for _, r := range rep.Rows {
		if !r.Unavailable && r.Note != "" {
			notes = append(notes, r.Group+", "+r.Name+": "+r.Note)
		}
	}
	notes = append(notes, rep.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintf(w, "- %s\n", strings.ReplaceAll(n, "\n", " "))
		}
	}
	return nil
}

// sig3 is v to three significant digits, with thousands separators:
// 6,930, 203, 87.1, 0.0335.
func sig3(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	if g := strconv.FormatFloat(v, 'g', 3, 64); !strings.Contains(g, "e+") || math.Abs(v) >= 1e15 {
		return g // below 1,000 after rounding, or too large for separators
	}
	exp := math.Floor(math.Log10(math.Abs(v)))
	unit := math.Pow(10, exp-2)
	return humanInt(int64(math.Round(v/unit) * unit))
}

// sig3Lat is sig3 for a latency cell, empty when there is none.
func sig3Lat(v float64) string {
	if v == 0 {
		return ""
	}
	return sig3(v)
}

// humanInt writes n with a comma every three digits.
func humanInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// WriteTable writes the report as an aligned text table.
func (rep *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "atr-bench %s run on %s, %d cores, %s, %.0f s (started %s)\n",
		rep.Mode, rep.Database, rep.Cores, rep.GoVersion, rep.Duration, rep.Started.UTC().Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "group\tfigure\tvalue\tunit\tn\tp50 ms\tp95 ms\tp99 ms\tratio\tvs\ttarget\tnote")
	for _, r := range rep.Rows {
		if r.Unavailable {
			fmt.Fprintf(tw, "%s\t%s\tunavailable\t\t\t\t\t\t\t\t\t%s\n", r.Group, r.Name, r.Note)
			continue
		}
		ratio, target := "", r.Target
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.3g", *r.Ratio)
		}
		if r.Met != nil {
			if *r.Met {
				target += " met"
			} else {
				target += " MISSED"
			}
		}
		n := ""
		if r.N > 0 {
			n = fmt.Sprint(r.N)
			if r.Errors > 0 {
				n += fmt.Sprintf(" (%d err)", r.Errors)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Group, r.Name, num(r.Value), r.Unit, n,
			lat(r.P50ms), lat(r.P95ms), lat(r.P99ms), ratio, r.RatioTo, target, r.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func lat(v float64) string {
	if v == 0 {
		return ""
	}
	return num(v)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
