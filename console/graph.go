package console

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/stepflow/stepflow/console/layout"
	"github.com/stepflow/stepflow/workflow"
)

// graphView is a blueprint drawn for the SVG of a run page: numbers are
// formatted here, and the template writes them and the (escaped) text.
type graphView struct {
	Width, Height string
	Nodes         []graphNode
	Edges         []graphEdge
}

type graphNode struct {
	ID, Short  string // its id, and the id cut to fit the box
	Sub        string // type, state, attempts or a group's summary
	Badge      string // a scatter's workers: "×200 workers, 198 done"
	Title      string // the tooltip: everything in full
	State      string
	Anchor     string // the steps table's row of it
	X, Y, W, H string
	TextX      string
	Failed     bool // the node the run failed at
}

type graphEdge struct {
	D            string // the SVG path
	Class        string // taken, untaken, fallback, back
	Label, Title string
	LX, LY       string
}

// Sizes of the drawing, in px at the stylesheet's font sizes.
const (
	nodeHeight   = 46
	badgeHeight  = 16 // a third line
	nodeMinWidth = 120
	nodeMaxWidth = 250
	idChars      = 30 // an id longer than this is cut (in full in the tooltip)
	idCharWidth  = 7.4
	subCharWidth = 6.4
	labelChars   = 34
	subChars     = 35 // (nodeMaxWidth - 22) / subCharWidth
	labelCharW   = 6.2
)

// buildGraph draws bp with the states of the run's steps.
func buildGraph(bp *workflow.Blueprint, st *steps, failedNode string) *graphView {
	if bp == nil || len(bp.Nodes) == 0 {
		return nil
	}
	var g layout.Graph
	nodes := make([]graphNode, 0, len(bp.Nodes))
	taken := map[string][]string{} // node → targets of its taken edges
	resolved := map[string]bool{}  // node → its edges are decided
	for _, n := range bp.Nodes {
		gn := graphNode{ID: n.ID, Short: short(idChars, n.ID), State: statePending, Failed: n.ID == failedNode}
		sub := []string{n.Uses}
		title := []string{n.ID + " (" + n.Uses + ")"}
		if grp := st.byKey[n.ID]; grp != nil {
			gn.State, gn.Anchor = grp.State, grp.Anchor
			for _, s := range grp.Steps {
				taken[n.ID] = append(taken[n.ID], s.Taken...)
				resolved[n.ID] = resolved[n.ID] || s.State.Resolved()
			}
			if grp.Many() {
				sub = append(sub, grp.State)
				gn.Badge = grp.Summary()
			} else {
				s := grp.Steps[0]
				sub = append(sub, string(s.State))
				if s.Attempts > 1 {
					sub = append(sub, fmt.Sprintf("%d attempts", s.Attempts))
				}
			}
			title = append(title, grp.Counts)
		} else {
			sub = append(sub, "not reached")
		}
		if w := st.byKey[workersKey(n.ID)]; w != nil {
			gn.Badge = strings.TrimPrefix(gn.Badge+" · "+w.Summary(), " · ")
			title = append(title, "workers: "+w.Counts)
			if w.State == stateFailed || w.State == stateRunning || w.State == stateReady {
				gn.State = aggregate([]string{gn.State, w.State})
			}
		}
		gn.Sub = strings.Join(sub, " · ")
		gn.Title = strings.Join(title, "\n")
		width := max(float64(utf8.RuneCountInString(gn.Short))*idCharWidth, float64(max(utf8.RuneCountInString(gn.Sub), utf8.RuneCountInString(gn.Badge)))*subCharWidth) + 22
		width = min(max(width, nodeMinWidth), nodeMaxWidth)
		gn.Sub, gn.Badge = short(subChars, gn.Sub), short(subChars, gn.Badge)
		height := float64(nodeHeight)
		if gn.Badge != "" {
			height += badgeHeight
		}
		g.Nodes = append(g.Nodes, layout.Node{ID: n.ID, Width: width, Height: height})
		nodes = append(nodes, gn)
	}
	type edgeInfo struct{ label, title, class string }
	var infos []edgeInfo
	for _, e := range bp.Edges {
		var parts []string
		if e.Action != "" {
			parts = append(parts, e.Action)
		}
		if e.Condition != "" {
			parts = append(parts, "if "+e.Condition)
		}
		title := strings.Join(parts, " · ")
		if e.Transform != "" {
			title = strings.TrimPrefix(title+" · transform "+e.Transform, " · ")
		}
		info := edgeInfo{label: short(labelChars, strings.Join(parts, " · ")), title: title}
		switch {
		case slices.Contains(taken[e.Source], e.Target):
			info.class = "taken"
		case resolved[e.Source]:
			info.class = "untaken"
		}
		width := 0.0
		if info.label != "" {
			width = float64(utf8.RuneCountInString(info.label))*labelCharW + 8
		}
		g.Edges = append(g.Edges, layout.Edge{From: e.Source, To: e.Target, LabelWidth: width})
		infos = append(infos, info)
	}
	// A fallback is drawn as a dashed edge from the node it stands in for.
	for _, n := range bp.Nodes {
		if n.Config != nil && n.Config.Fallback != "" {
			g.Edges = append(g.Edges, layout.Edge{From: n.ID, To: n.Config.Fallback, LabelWidth: 8 * labelCharW})
			infos = append(infos, edgeInfo{label: "fallback", title: n.Config.Fallback + " runs if " + n.ID + " fails", class: "fallback"})
		}
	}
	l := layout.Compute(g, layout.Options{})
	out := &graphView{Width: px(l.Width)}
	height := l.Height
	for i, p := range l.Nodes {
		gn := nodes[i]
		gn.X, gn.Y, gn.W, gn.H, gn.TextX = px(p.X), px(p.Y), px(p.W), px(p.H), px(p.W/2)
		out.Nodes = append(out.Nodes, gn)
	}
	for i, pe := range l.Edges {
		if len(pe.Points) < 2 {
			continue
		}
		info := infos[i]
		class := info.class
		ly := pe.Label.Y - 4
		if pe.Reversed || pe.Self {
			class = strings.TrimSpace(class + " back")
		}
		lx := pe.Label.X
		if pe.Reversed {
			// Under the arc's middle.
			bottom := backBottom(pe)
			lx, ly = (pe.Points[0].X+pe.Points[len(pe.Points)-1].X)/2, bottom+14
			height = max(height, bottom+20)
		}
		out.Edges = append(out.Edges, graphEdge{D: pathData(pe), Class: class, Label: info.label, Title: info.title, LX: px(lx), LY: px(ly)})
	}
	out.Height = px(height)
	return out
}

// pathData is an edge as an SVG path: a horizontal S-curve per segment,
// one cubic arc for a self-loop.
func pathData(e layout.PlacedEdge) string {
	p := e.Points
	var b strings.Builder
	fmt.Fprintf(&b, "M%s %s", px(p[0].X), px(p[0].Y))
	if e.Self && len(p) == 4 {
		fmt.Fprintf(&b, "C%s %s %s %s %s %s", px(p[1].X), px(p[1].Y), px(p[2].X), px(p[2].Y), px(p[3].X), px(p[3].Y))
		return b.String()
	}
	if e.Reversed {
		// Back against the ranks, between the same sides as the edges
		// forward: one arc under its route, bottoming at backBottom.
		a, z := p[0], p[len(p)-1]
		bottom := backBottom(e)
		fmt.Fprintf(&b, "C%s %s %s %s %s %s", px(a.X), px(a.Y+(bottom-a.Y)*4/3), px(z.X), px(z.Y+(bottom-z.Y)*4/3), px(z.X), px(z.Y))
		return b.String()
	}
	for k := 1; k < len(p); k++ {
		a, z := p[k-1], p[k]
		mid := (a.X + z.X) / 2
		fmt.Fprintf(&b, "C%s %s %s %s %s %s", px(mid), px(a.Y), px(mid), px(z.Y), px(z.X), px(z.Y))
	}
	return b.String()
}

// backSag is how far below its route an edge back against the ranks
// bends: clear of the boxes at its ends.
const backSag = 44

// backBottom is the lowest point of a back edge's arc.
func backBottom(e layout.PlacedEdge) float64 {
	low := 0.0
	for _, p := range e.Points {
		low = max(low, p.Y)
	}
	return low + backSag
}

func px(v float64) string { return fmt.Sprintf("%.1f", v) }
