package layout_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/console/layout"
)

// graph builds a Graph of 100×40 boxes from "a>b b>c" (edges; a node named
// in no edge is given alone, as "d").
func graph(spec string) layout.Graph {
	var g layout.Graph
	seen := map[string]bool{}
	node := func(id string) {
		if !seen[id] {
			seen[id] = true
			g.Nodes = append(g.Nodes, layout.Node{ID: id, Width: 100, Height: 40})
		}
	}
	for _, f := range strings.Fields(spec) {
		from, to, isEdge := strings.Cut(f, ">")
		node(from)
		if isEdge {
			node(to)
			g.Edges = append(g.Edges, layout.Edge{From: from, To: to})
		}
	}
	return g
}

func byID(l layout.Layout) map[string]layout.PlacedNode {
	m := map[string]layout.PlacedNode{}
	for _, n := range l.Nodes {
		m[n.ID] = n
	}
	return m
}

func ranks(l layout.Layout) string {
	var b strings.Builder
	for i, n := range l.Nodes {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s:%d", n.ID, n.Rank)
	}
	return b.String()
}

// checkGeometry asserts what holds of every layout: boxes of one rank do
// not overlap and keep their order top to bottom, ranks go left to right
// without overlapping, forward edges run rightwards from their source's
// right side to their target's left side, and all of it is inside the
// drawing.
func checkGeometry(t *testing.T, g layout.Graph, l layout.Layout) {
	t.Helper()
	if len(l.Nodes) != len(g.Nodes) || len(l.Edges) != len(g.Edges) {
		t.Fatalf("%d nodes and %d edges placed, want %d and %d", len(l.Nodes), len(l.Edges), len(g.Nodes), len(g.Edges))
	}
	for i, a := range l.Nodes {
		if a.ID != g.Nodes[i].ID || a.W != g.Nodes[i].Width || a.H != g.Nodes[i].Height {
			t.Errorf("node %d placed as %+v, want %s of its size", i, a, g.Nodes[i].ID)
		}
		if a.X < 0 || a.Y < 0 || a.X+a.W > l.Width || a.Y+a.H > l.Height {
			t.Errorf("%s at %+v is outside the %v×%v drawing", a.ID, a, l.Width, l.Height)
		}
		for _, b := range l.Nodes[i+1:] {
			switch {
			case a.Rank == b.Rank && a.Order == b.Order:
				t.Errorf("%s and %s share rank %d, order %d", a.ID, b.ID, a.Rank, a.Order)
			case a.Rank == b.Rank && (a.Order < b.Order) != (a.Y+a.H <= b.Y):
				t.Errorf("%s (order %d, y %v..%v) and %s (order %d, y %v..%v) overlap or are out of order", a.ID, a.Order, a.Y, a.Y+a.H, b.ID, b.Order, b.Y, b.Y+b.H)
			case a.Rank < b.Rank && a.X+a.W >= b.X, a.Rank > b.Rank && b.X+b.W >= a.X:
				t.Errorf("%s (rank %d, x %v) and %s (rank %d, x %v): ranks not left to right", a.ID, a.Rank, a.X, b.ID, b.Rank, b.X)
			}
		}
	}
	nodes := byID(l)
	for i, e := range l.Edges {
		if e.From != g.Edges[i].From || e.To != g.Edges[i].To {
			t.Errorf("edge %d placed as %s→%s, want %s→%s", i, e.From, e.To, g.Edges[i].From, g.Edges[i].To)
		}
		if e.Self || e.Reversed || len(e.Points) == 0 {
			continue
		}
		from, to := nodes[e.From], nodes[e.To]
		first, last := e.Points[0], e.Points[len(e.Points)-1]
		if first.X != from.X+from.W || first.Y < from.Y || first.Y > from.Y+from.H || last.X != to.X || last.Y < to.Y || last.Y > to.Y+to.H {
			t.Errorf("edge %s→%s runs from %v to %v, not from %s's right side to %s's left side", e.From, e.To, first, last, e.From, e.To)
		}
		if len(e.Points) != to.Rank-from.Rank+1 {
			t.Errorf("edge %s→%s over ranks %d..%d has %d points, want one per rank", e.From, e.To, from.Rank, to.Rank, len(e.Points))
		}
		for k := 1; k < len(e.Points); k++ {
			if e.Points[k].X <= e.Points[k-1].X {
				t.Errorf("edge %s→%s goes leftwards: %v", e.From, e.To, e.Points)
			}
		}
	}
}

func TestRanksAreLongestPaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, spec, ranks string
	}{
		{"a chain", "a>b b>c", "a:0 b:1 c:2"},
		{"a shortcut waits for the long way", "a>b b>c a>c", "a:0 b:1 c:2"},
		{"a fork and a join", "v>r v>p p>c r>s c>s s>n", "v:0 r:1 p:1 c:2 s:3 n:4"},
		{"two sources", "a>c b>c", "a:0 c:1 b:0"},
		{"a lone node", "a>b z", "a:0 b:1 z:0"},
		{"a cycle is broken at its back edge", "a>b b>c c>a", "a:0 b:1 c:2"},
		{"a loop with an exit", "s>body body>ctl ctl>body ctl>done", "s:0 body:1 ctl:2 done:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := graph(tc.spec)
			l := layout.Compute(g, layout.Options{})
			if got := ranks(l); got != tc.ranks {
				t.Errorf("ranks %s, want %s", got, tc.ranks)
			}
			checkGeometry(t, g, l)
		})
	}
}

func TestLongEdgesPassThroughEveryRank(t *testing.T) {
	t.Parallel()
	g := graph("a>b b>c c>d a>d")
	l := layout.Compute(g, layout.Options{})
	checkGeometry(t, g, l)
	long := l.Edges[3]
	if len(long.Points) != 4 {
		t.Fatalf("a→d over three ranks has points %v, want four", long.Points)
	}
	// Its bends keep clear of b and c, which stand in the same ranks.
	nodes := byID(l)
	for k, id := range []string{"b", "c"} {
		p, n := long.Points[k+1], nodes[id]
		if p.Y >= n.Y && p.Y <= n.Y+n.H {
			t.Errorf("a→d passes rank %d at y %v, through %s (y %v..%v)", n.Rank, p.Y, id, n.Y, n.Y+n.H)
		}
	}
}

// A chain is drawn as a straight line: every box of it at the same height.
func TestAChainIsStraight(t *testing.T) {
	t.Parallel()
	l := layout.Compute(graph("a>b b>c c>d"), layout.Options{})
	for _, n := range l.Nodes {
		if n.Y != l.Nodes[0].Y {
			t.Errorf("%s at y %v, %s at %v: want a straight chain", n.ID, n.Y, l.Nodes[0].ID, l.Nodes[0].Y)
		}
	}
	// And a fork's target sits between its two branches.
	l = layout.Compute(graph("s>a s>b a>j b>j"), layout.Options{})
	n := byID(l)
	mid := func(id string) float64 { return n[id].Y + n[id].H/2 }
	if math.Abs(mid("s")-(mid("a")+mid("b"))/2) > 0.5 || math.Abs(mid("j")-mid("s")) > 0.5 {
		t.Errorf("fork centres s %v, a %v, b %v, j %v: want s and j between a and b", mid("s"), mid("a"), mid("b"), mid("j"))
	}
}

func TestOrderingRemovesCrossings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, spec string
		want       int // crossings left
	}{
		// In declaration order b→y and c→x cross; a, c side by side do not.
		{"sources reordered", "a>x b>y c>x", 0},
		{"targets reordered", "s>a s>b s>c a>z b>y c>x", 0},
		// Declared crosswise over three ranks.
		{"a ladder", "a1>b2 a2>b1 b1>c2 b2>c1 a1>a2x", 0},
		// K(3,3) between two ranks cannot be drawn without crossings: 9
		// edges, at best 9 crossings.
		{"K3,3 keeps its least", "a>x a>y a>z b>x b>y b>z c>x c>y c>z", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := graph(tc.spec)
			l := layout.Compute(g, layout.Options{})
			checkGeometry(t, g, l)
			if l.Crossings != tc.want {
				t.Errorf("%d crossings left (%s), want %d", l.Crossings, orders(l), tc.want)
			}
		})
	}
}

func orders(l layout.Layout) string {
	var parts []string
	for _, n := range l.Nodes {
		parts = append(parts, fmt.Sprintf("%s@%d.%d", n.ID, n.Rank, n.Order))
	}
	return strings.Join(parts, " ")
}

func TestBackEdgesAndSelfLoops(t *testing.T) {
	t.Parallel()
	g := graph("s>body body>ctl ctl>body ctl>done ctl>ctl")
	l := layout.Compute(g, layout.Options{})
	checkGeometry(t, g, l)
	back, self := l.Edges[2], l.Edges[4]
	n := byID(l)
	if !back.Reversed || len(back.Points) != 2 {
		t.Fatalf("ctl→body placed as %+v, want a reversed edge of two points", back)
	}
	// It runs from ctl back to body: it starts at ctl and ends at body.
	if first, last := back.Points[0], back.Points[1]; first.X != n["ctl"].X || last.X != n["body"].X+n["body"].W {
		t.Errorf("ctl→body from %v to %v, want from ctl's left side to body's right side", first, last)
	}
	if !self.Self || len(self.Points) != 4 || self.Points[1].Y >= n["ctl"].Y || self.Label.Y >= n["ctl"].Y {
		t.Errorf("ctl→ctl placed as %+v, want an arc above ctl (y %v)", self, n["ctl"].Y)
	}
	for _, p := range self.Points {
		if p.Y < 0 {
			t.Errorf("the self-loop rises out of the drawing: %v", self.Points)
		}
	}
}

func TestLabelsWidenTheirGap(t *testing.T) {
	t.Parallel()
	g := graph("a>b b>c")
	g.Edges[0].LabelWidth = 300
	l := layout.Compute(g, layout.Options{RankGap: 40})
	n := byID(l)
	if gap := n["b"].X - (n["a"].X + n["a"].W); gap < 300 {
		t.Errorf("the gap under a 300-wide label is %v", gap)
	}
	if gap := n["c"].X - (n["b"].X + n["b"].W); gap != 40 {
		t.Errorf("the gap without a label is %v, want the RankGap 40", gap)
	}
	e := l.Edges[0]
	if e.Label.X <= n["a"].X+n["a"].W || e.Label.X >= n["b"].X {
		t.Errorf("the label at %v is not between a and b", e.Label)
	}
}

func TestEdgesToUnknownNodesAreLeftOut(t *testing.T) {
	t.Parallel()
	g := graph("a>b")
	g.Edges = append(g.Edges, layout.Edge{From: "a", To: "ghost"})
	l := layout.Compute(g, layout.Options{})
	if len(l.Edges) != 2 || len(l.Edges[1].Points) != 0 {
		t.Errorf("edges %+v, want a→ghost without points", l.Edges)
	}
	if e := layout.Compute(layout.Graph{}, layout.Options{}); len(e.Nodes) != 0 {
		t.Errorf("the empty graph: %+v", e)
	}
}

func TestLayoutIsDeterministic(t *testing.T) {
	t.Parallel()
	g := wide(20, 10)
	first := layout.Compute(g, layout.Options{})
	for range 3 {
		if again := layout.Compute(g, layout.Options{}); !reflect.DeepEqual(first, again) {
			t.Fatal("two layouts of one graph differ")
		}
	}
	checkGeometry(t, g, first)
}

// wide is ranks × width nodes, each linked to two of the next rank and,
// every third, to one two ranks on: a blueprint of some hundreds of nodes.
func wide(ranks, width int) layout.Graph {
	var g layout.Graph
	id := func(r, i int) string { return fmt.Sprintf("n%d_%d", r, i) }
	for r := range ranks {
		for i := range width {
			g.Nodes = append(g.Nodes, layout.Node{ID: id(r, i), Width: 120, Height: 40})
			if r+1 < ranks {
				g.Edges = append(g.Edges, layout.Edge{From: id(r, i), To: id(r+1, (i*7+3)%width)}, layout.Edge{From: id(r, i), To: id(r+1, (i*3+1)%width)})
			}
			if r+2 < ranks && i%3 == 0 {
				g.Edges = append(g.Edges, layout.Edge{From: id(r, i), To: id(r+2, (i+5)%width)})
			}
		}
	}
	return g
}

func BenchmarkCompute500(b *testing.B) {
	g := wide(25, 20)
	for b.Loop() {
		layout.Compute(g, layout.Options{})
	}
}
