package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
)

// Thresholds decide a row's health.
type Thresholds struct {
	// MaxLag: a lag above it is yellow.
	MaxLag int64
	// MaxAge: records waiting (lag above 0) behind a newest change older than it is red: the
	// consumer does not keep up. An old newest change with no lag is a quiet source, and fine.
	MaxAge time.Duration
}

// Health is a row's verdict; a higher value is worse.
type Health int

// Healths, from fine to bad.
const (
	Healthy Health = iota
	Warning        // yellow: worth a look
	Failing        // red: not being kept fresh
)

// Row is one line of the status table.
type Row struct {
	Projection, Generation, State, Progress, Lag, Newest, Owner, DeadLetters, Note string
	Health                                                                         Health
}

// shownStates are the generation states the table lists: those being built and those kept up to
// date that readers may use (a retiring generation only drains).
var shownStates = map[string]bool{"allocated": true, "backfilling": true, "tailing": true, "live": true}

// Rows turns statuses into table rows (statuses in order, generations newest first), judged by
// th; now is when the statuses were read.
func Rows(statuses []*pb.ProjectionStatus, th Thresholds, now time.Time) []Row {
	var out []Row
	for _, ps := range statuses {
		name := ps.GetProjection().GetDefinition().GetName()
		n := 0
		for _, g := range ps.GetGenerations() {
			if !shownStates[g.GetState()] {
				continue
			}
			out = append(out, generationRow(name, g, ps.GetRunning(), th))
			n++
		}
		if n == 0 {
			r := Row{Projection: name, Generation: "-", State: "-", Progress: "-", Lag: "-", Newest: "-", Owner: "-", DeadLetters: "-"}
			if run := ps.GetRunning(); run != nil {
				r.Progress = phase(run.GetPhase(), run.GetBackfill())
				if run.GetError() != "" {
					r.Note, r.Health = run.GetError(), Warning
				}
			} else {
				r.Note, r.Health = "no generation is built or kept up to date", Warning
			}
			out = append(out, r)
		}
	}
	return out
}

func generationRow(name string, g *pb.GenerationStatus, run *pb.BuildStatus, th Thresholds) Row {
	r := Row{
		Projection: name, Generation: strconv.FormatInt(g.GetGeneration(), 10), State: g.GetState(),
		Progress: "-", Lag: "-", Newest: "-", Owner: "-", DeadLetters: "-",
	}
	var notes []string
	flag := func(h Health, note string) {
		r.Health = max(r.Health, h)
		notes = append(notes, note)
	}
	switch {
	case run != nil && run.GetGeneration() == g.GetGeneration():
		b := run.GetBackfill()
		if b == nil {
			b = g.GetBackfill()
		}
		r.Progress = phase(run.GetPhase(), b)
	case g.GetState() == "backfilling":
		r.Progress = phase("backfilling", g.GetBackfill())
	}
	if rb := g.GetRebuild(); rb != nil {
		r.Progress = "rebuilding"
		if rb.GetReason() == "data_loss" {
			flag(Failing, "rebuilding in place: Redis lost its data")
		} else {
			flag(Warning, "rebuilding in place: "+rb.GetReason())
		}
	}
	if c := g.GetConsumer(); c != nil {
		switch c.GetState() {
		case "none":
			if g.GetState() == "live" {
				flag(Failing, c.GetMessage())
			} else {
				flag(Warning, c.GetMessage())
			}
		default:
			lag := c.GetLagRecords()
			r.Lag = strconv.FormatInt(lag, 10)
			r.Owner = c.GetOwner()
			r.DeadLetters = strconv.Itoa(int(c.GetDeadLettersLastHour()))
			age := time.Duration(c.GetNewestChangeAgeSeconds() * float64(time.Second))
			if c.GetNewestChangeTime() != nil {
				r.Newest = formatAge(age) + " ago"
			}
			if c.GetState() != "reporting" {
				// The figures are the last report's: records that arrived since are not counted.
				r.Lag += "?"
				msg := c.GetMessage()
				if msg == "" {
					msg = "consumer " + c.GetState()
				}
				flag(Failing, msg+"; lag as of that report")
			}
			if lag > 0 && c.GetNewestChangeTime() != nil && age > th.MaxAge {
				flag(Failing, fmt.Sprintf("%d records wait behind a change %s old", lag, formatAge(age)))
			} else if lag > th.MaxLag {
				flag(Warning, fmt.Sprintf("lag %d > %d", lag, th.MaxLag))
			}
			if n := c.GetDeadLettersLastHour(); n > 0 {
				flag(Warning, fmt.Sprintf("%d dead letters in the last hour", n))
			}
		}
	}
	r.Note = strings.Join(notes, "; ")
	return r
}

// phase is a build's phase with its backfill's progress, e.g. "backfilling 45%".
func phase(name string, b *pb.BackfillProgress) string {
	if name == "" {
		name = "-"
	}
	if name == "backfilling" && b.GetEndOffset() > 0 {
		return fmt.Sprintf("%s %d%%", name, min(b.GetOffset()*100/b.GetEndOffset(), 100))
	}
	return name
}

// formatAge writes d in two units at most: 4s, 2m10s, 5h3m, 3d4h.
func formatAge(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}

// ANSI colours of a row by its health.
const (
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiReset  = "\x1b[0m"
)

var header = Row{Projection: "PROJECTION", Generation: "GEN", State: "STATE", Progress: "PROGRESS", Lag: "LAG",
	Newest: "NEWEST CHANGE", Owner: "OWNER", DeadLetters: "DEAD 1H", Note: "NOTE"}

// Render writes rows as a table under a header, then a summary line; with color, a yellow or
// red row is coloured whole (the escape codes take no column width).
func Render(w io.Writer, rows []Row, color bool) error {
	cells := func(r Row) []string {
		return []string{r.Projection, r.Generation, r.State, r.Progress, r.Lag, r.Newest, r.Owner, r.DeadLetters, r.Note}
	}
	rightAligned := map[int]bool{1: true, 4: true, 7: true}
	all := append([]Row{header}, rows...)
	widths := make([]int, len(cells(header)))
	for _, r := range all {
		for i, c := range cells(r) {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	counts := map[Health]int{}
	projections := map[string]bool{}
	for n, r := range all {
		var line strings.Builder
		for i, c := range cells(r) {
			pad := strings.Repeat(" ", widths[i]-len([]rune(c)))
			switch {
			case i == len(widths)-1:
				line.WriteString(c) // the last column: no trailing blanks
			case rightAligned[i]:
				line.WriteString(pad + c + "  ")
			default:
				line.WriteString(c + pad + "  ")
			}
		}
		text := strings.TrimRight(line.String(), " ")
		if n > 0 {
			counts[r.Health]++
			projections[r.Projection] = true
			switch {
			case color && r.Health == Failing:
				text = ansiRed + text + ansiReset
			case color && r.Health == Warning:
				text = ansiYellow + text + ansiReset
			}
		}
		b.WriteString(text + "\n")
	}
	fmt.Fprintf(&b, "%d projections, %d rows: %d fine, %d to look at, %d not kept fresh\n",
		len(projections), len(rows), counts[Healthy], counts[Warning], counts[Failing])
	_, err := io.WriteString(w, b.String())
	return err
}
