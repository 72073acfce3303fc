package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
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
