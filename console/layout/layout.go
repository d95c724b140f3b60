// Package layout places a directed graph in layers, left to right, for the
// console to draw as SVG: Sugiyama's method in its plainest form.
//
//  1. Cycles are broken by reversing the back edges a depth-first search
//     finds (a loop's edge back to its body), so the rest sees a DAG.
//  2. Each node's rank (its column) is the longest path to it from a
//     source; an edge over several ranks gets a dummy node in each rank it
//     crosses, so every edge joins adjacent ranks.
//  3. The order within each rank is improved by barycenter sweeps (a node
//     moves to the mean position of its neighbours in the rank before or
//     after), then by swapping neighbours while that removes crossings;
//     the order with the fewest crossings seen is kept.
//  4. Vertical positions pull each node towards its neighbours' centres,
//     keeping the order and the gaps (an isotonic regression per rank).
//
// It is pure: it knows nothing of workflows, HTTP or SVG syntax, and
// imports nothing of stepflow.
package layout

import (
	"math"
	"slices"
	"sort"
)

// Graph is what to lay out. Node ids are unique; edges whose ends are not
// nodes are ignored.
type Graph struct {
	Nodes []Node
	Edges []Edge
}

// Node is a box of a given size.
type Node struct {
	ID            string
	Width, Height float64
}

// Edge joins two nodes; its label (LabelWidth wide, 0 for none) is put on
// its first segment, and the gap after the source's rank widens to fit it.
type Edge struct {
	From, To   string
	LabelWidth float64
}

// Options are the spacing of a layout; zero values take the defaults.
type Options struct {
	RankGap float64 // horizontal space between ranks (default 56)
	NodeGap float64 // vertical space between boxes of a rank (default 20)
	Margin  float64 // around the drawing (default 12)
	Sweeps  int     // barycenter sweeps, each down and up (default 12)
}

// Point is a position in the drawing.
type Point struct{ X, Y float64 }

// Layout is the placed graph: nodes and edges in the order of the Graph.
type Layout struct {
	Width, Height float64
	Nodes         []PlacedNode
	Edges         []PlacedEdge
	Crossings     int // edge crossings left between adjacent ranks
}

// PlacedNode is a node's box: X, Y is its top left corner.
type PlacedNode struct {
	ID          string
	Rank, Order int
	X, Y, W, H  float64
}

// PlacedEdge is an edge's route from its source's box to its target's,
// through the dummy nodes of the ranks it crosses. A Reversed edge goes
// against the ranks (a loop back); a self-loop has Self set and an arc
// above its node.
type PlacedEdge struct {
	From, To string
	Points   []Point
	Label    Point // the centre of its label
	Reversed bool
	Self     bool
}

// vertex is a node or a dummy of the layered graph.
type vertex struct {
	id         int // index into g.vs
	node       int // index into Graph.Nodes; -1 for a dummy
	rank, pos  int
	w, h       float64
	x, y       float64 // centre
	up, down   []int   // neighbours in rank-1 and rank+1
	labelWidth float64 // of the edge segment leaving it rightwards (dummies and labelled sources)
}

// chain is an edge as a path of vertices, in rank order.
type chain struct {
	edge     int
	vs       []int
	reversed bool
}

type layered struct {
	vs     []*vertex
	ranks  [][]int // vertex ids by rank, in order
	chains []chain
}

// Compute lays out g.
func Compute(g Graph, o Options) Layout {
	if o.RankGap == 0 {
		o.RankGap = 56
	}
	if o.NodeGap == 0 {
		o.NodeGap = 20
	}
	if o.Margin == 0 {
		o.Margin = 12
	}
	if o.Sweeps == 0 {
		o.Sweeps = 12
	}
	index := make(map[string]int, len(g.Nodes))
	for i, n := range g.Nodes {
		index[n.ID] = i
	}
	// Edges between known nodes; self-loops are drawn apart.
	type dagEdge struct{ from, to, edge int }
	var edges []dagEdge
	var selfs []int
	for i, e := range g.Edges {
		f, okf := index[e.From]
		t, okt := index[e.To]
		switch {
		case !okf || !okt:
		case f == t:
			selfs = append(selfs, i)
		default:
			edges = append(edges, dagEdge{f, t, i})
		}
	}
	reversed := backEdges(len(g.Nodes), func(yield func(from, to, i int)) {
		for i, e := range edges {
			yield(e.from, e.to, i)
		}
	})
	out := make([][]int, len(g.Nodes))
	for i, e := range edges {
		if reversed[i] {
			e.from, e.to = e.to, e.from
		}
		edges[i] = e
		out[e.from] = append(out[e.from], e.to)
	}
	rank := longestPath(len(g.Nodes), out)

	l := &layered{}
	for i, n := range g.Nodes {
		l.vs = append(l.vs, &vertex{id: i, node: i, rank: rank[i], w: n.Width, h: n.Height})
	}
	for i, e := range edges {
		c := chain{edge: e.edge, reversed: reversed[i], vs: []int{e.from}}
		for r := rank[e.from] + 1; r < rank[e.to]; r++ {
			d := &vertex{id: len(l.vs), node: -1, rank: r}
			l.vs = append(l.vs, d)
			c.vs = append(c.vs, d.id)
		}
		c.vs = append(c.vs, e.to)
		for k := 0; k+1 < len(c.vs); k++ {
			a, b := l.vs[c.vs[k]], l.vs[c.vs[k+1]]
			a.down = append(a.down, b.id)
			b.up = append(b.up, a.id)
		}
		// The label sits on the segment leaving the edge's drawn source:
		// the first for a forward edge, the last for a reversed one.
		lw := g.Edges[e.edge].LabelWidth
		at := c.vs[0]
		if c.reversed {
			at = c.vs[len(c.vs)-2]
		}
		l.vs[at].labelWidth = max(l.vs[at].labelWidth, lw)
		l.chains = append(l.chains, c)
	}
	l.order(o.Sweeps)
	l.place(o)
	return l.result(g, selfs, o)
}

// backEdges finds, by a depth-first search from the nodes in order (those
// with no incoming edge first), the edges that close a cycle.
func backEdges(n int, edges func(yield func(from, to, i int))) map[int]bool {
	type arc struct{ to, i int }
	out := make([][]arc, n)
	indeg := make([]int, n)
	edges(func(from, to, i int) {
		out[from] = append(out[from], arc{to, i})
		indeg[to]++
	})
	const (
		white = iota
		grey
		black
	)
	color := make([]int, n)
	back := map[int]bool{}
	var visit func(v int)
	visit = func(v int) {
		color[v] = grey
		for _, a := range out[v] {
			switch color[a.to] {
			case white:
				visit(a.to)
			case grey:
				back[a.i] = true
			}
		}
		color[v] = black
	}
	for _, pass := range []bool{true, false} {
		for v := range n {
			if color[v] == white && (indeg[v] == 0) == pass {
				visit(v)
			}
		}
	}
	return back
}

// longestPath ranks a DAG's nodes: sources 0, every other node one more
// than its highest predecessor.
func longestPath(n int, out [][]int) []int {
	indeg := make([]int, n)
	for _, ts := range out {
		for _, t := range ts {
			indeg[t]++
		}
	}
	rank := make([]int, n)
	queue := make([]int, 0, n)
	for v := range n {
		if indeg[v] == 0 {
			queue = append(queue, v)
		}
	}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, t := range out[v] {
			rank[t] = max(rank[t], rank[v]+1)
			if indeg[t]--; indeg[t] == 0 {
				queue = append(queue, t)
			}
		}
	}
	return rank
}

// order sets each rank's order: a breadth-first start, then sweeps.
func (l *layered) order(sweeps int) {
	top := 0
	for _, v := range l.vs {
		top = max(top, v.rank)
	}
	l.ranks = make([][]int, top+1)
	// Breadth-first from the nodes of rank 0 in declaration order, so that
	// a chain's dummies follow their source.
	seen := make([]bool, len(l.vs))
	var queue []int
	for _, v := range l.vs {
		if v.node >= 0 && v.rank == 0 {
			queue = append(queue, v.id)
			seen[v.id] = true
		}
	}
	for i := 0; i < len(l.vs); i++ {
		if len(queue) == 0 { // a vertex no rank-0 node reaches
			for _, v := range l.vs {
				if !seen[v.id] {
					queue, seen[v.id] = append(queue, v.id), true
					break
				}
			}
		}
		v := l.vs[queue[0]]
		queue = queue[1:]
		v.pos = len(l.ranks[v.rank])
		l.ranks[v.rank] = append(l.ranks[v.rank], v.id)
		for _, d := range v.down {
			if !seen[d] {
				seen[d] = true
				queue = append(queue, d)
			}
		}
	}
	best := l.snapshot()
	bestCross := l.crossings()
	for range sweeps {
		if bestCross == 0 {
			break
		}
		for r := 1; r < len(l.ranks); r++ {
			l.sortByBarycenter(r, true)
		}
		for r := len(l.ranks) - 2; r >= 0; r-- {
			l.sortByBarycenter(r, false)
		}
		l.transpose()
		if c := l.crossings(); c < bestCross {
			best, bestCross = l.snapshot(), c
		}
	}
	l.restore(best)
}

func (l *layered) snapshot() [][]int {
	s := make([][]int, len(l.ranks))
	for r, ids := range l.ranks {
		s[r] = slices.Clone(ids)
	}
	return s
}

func (l *layered) restore(s [][]int) {
	l.ranks = s
	for _, ids := range s {
		for p, id := range ids {
			l.vs[id].pos = p
		}
	}
}

// sortByBarycenter orders rank r by the mean position of each vertex's
// neighbours in the rank before (down) or after it; a vertex without
// such neighbours keeps its place.
func (l *layered) sortByBarycenter(r int, down bool) {
	ids := l.ranks[r]
	bary := make(map[int]float64, len(ids))
	for _, id := range ids {
		v := l.vs[id]
		ns := v.down
		if down {
			ns = v.up
		}
		if len(ns) == 0 {
			bary[id] = float64(v.pos)
			continue
		}
		sum := 0.0
		for _, n := range ns {
			sum += float64(l.vs[n].pos)
		}
		bary[id] = sum / float64(len(ns))
	}
	sort.SliceStable(ids, func(i, j int) bool { return bary[ids[i]] < bary[ids[j]] })
	for p, id := range ids {
		l.vs[id].pos = p
	}
}

// transpose swaps adjacent vertices of a rank while that lowers the
// crossings of their own segments (nothing else changes by the swap).
func (l *layered) transpose() {
	for improved, rounds := true, 0; improved && rounds < 4; rounds++ {
		improved = false
		for r, ids := range l.ranks {
			for i := 0; i+1 < len(ids); i++ {
				u, v := l.vs[ids[i]], l.vs[ids[i+1]]
				if l.pairCrossings(v, u) < l.pairCrossings(u, v) {
					l.swap(r, i)
					improved = true
				}
			}
		}
	}
}

// pairCrossings counts the crossings between the segments of u and those
// of v when u is left of (above) v.
func (l *layered) pairCrossings(u, v *vertex) int {
	c := 0
	for _, side := range [2]func(*vertex) []int{func(x *vertex) []int { return x.up }, func(x *vertex) []int { return x.down }} {
		for _, a := range side(u) {
			for _, b := range side(v) {
				if l.vs[a].pos > l.vs[b].pos {
					c++
				}
			}
		}
	}
	return c
}

func (l *layered) swap(r, i int) {
	ids := l.ranks[r]
	ids[i], ids[i+1] = ids[i+1], ids[i]
	l.vs[ids[i]].pos, l.vs[ids[i+1]].pos = i, i+1
}

// crossings counts the crossings of all adjacent rank pairs.
func (l *layered) crossings() int {
	c := 0
	for r := 0; r+1 < len(l.ranks); r++ {
		c += l.crossingsBetween(r)
	}
	return c
}

// crossingsBetween counts the crossing segments between ranks r and r+1:
// the inversions of their lower ends when sorted by their upper ends.
func (l *layered) crossingsBetween(r int) int {
	type seg struct{ a, b int }
	var segs []seg
	for _, id := range l.ranks[r] {
		v := l.vs[id]
		for _, d := range v.down {
			segs = append(segs, seg{v.pos, l.vs[d].pos})
		}
	}
	sort.Slice(segs, func(i, j int) bool {
		if segs[i].a != segs[j].a {
			return segs[i].a < segs[j].a
		}
		return segs[i].b < segs[j].b
	})
	// Count, for each segment, the earlier ones whose lower end is further
	// right: a Fenwick tree over the lower rank's positions.
	tree := make([]int, len(l.ranks[r+1])+1)
	c, seen := 0, 0
	for _, sg := range segs {
		atMost := 0
		for i := sg.b + 1; i > 0; i -= i & -i {
			atMost += tree[i]
		}
		c += seen - atMost
		for i := sg.b + 1; i < len(tree); i += i & -i {
			tree[i]++
		}
		seen++
	}
	return c
}

// dummyGap is the vertical space a dummy (an edge passing a rank) takes.
const dummyGap = 10

// place sets every vertex's centre.
func (l *layered) place(o Options) {
	// Columns: each as wide as its widest box, the gap after it as wide as
	// the widest label that starts in it.
	x := o.Margin
	for _, ids := range l.ranks {
		width, label := 0.0, 0.0
		for _, id := range ids {
			width = max(width, l.vs[id].w)
			label = max(label, l.vs[id].labelWidth)
		}
		for _, id := range ids {
			l.vs[id].x = x + width/2
		}
		x += width + max(o.RankGap, label+24)
	}
	// Rows: stacked in order, then pulled towards their neighbours.
	sep := func(a, b *vertex) float64 {
		gap := o.NodeGap
		if a.node < 0 || b.node < 0 {
			gap = dummyGap
		}
		return a.h/2 + gap + b.h/2
	}
	for _, ids := range l.ranks {
		y := 0.0
		for i, id := range ids {
			if i > 0 {
				y += sep(l.vs[ids[i-1]], l.vs[id])
			}
			l.vs[id].y = y
		}
	}
	for range 8 {
		for r := range l.ranks {
			l.align(r, sep, true)
		}
		for r := len(l.ranks) - 1; r >= 0; r-- {
			l.align(r, sep, false)
		}
	}
	top := math.Inf(1)
	for _, v := range l.vs {
		top = min(top, v.y-v.h/2)
	}
	for _, v := range l.vs {
		v.y += o.Margin - top
	}
}

// align moves the vertices of rank r as close as they may come to the
// mean centre of their neighbours (in the rank before on the way down,
// after on the way up; both for a vertex with only one side), keeping
// their order and separations: minimise Σ(yᵢ - wantᵢ)² subject to
// yᵢ₊₁ - yᵢ ≥ sepᵢ, solved exactly by pooling adjacent violators.
func (l *layered) align(r int, sep func(a, b *vertex) float64, down bool) {
	ids := l.ranks[r]
	if len(ids) == 0 {
		return
	}
	want := make([]float64, len(ids))
	offset := make([]float64, len(ids)) // the least distance from the first
	for i, id := range ids {
		v := l.vs[id]
		ns, other := v.up, v.down
		if !down {
			ns, other = other, ns
		}
		if len(ns) == 0 {
			ns = other
		}
		want[i] = v.y
		if len(ns) > 0 {
			sum := 0.0
			for _, n := range ns {
				sum += l.vs[n].y
			}
			want[i] = sum / float64(len(ns))
		}
		if i > 0 {
			offset[i] = offset[i-1] + sep(l.vs[ids[i-1]], v)
		}
	}
	// With zᵢ = yᵢ - offsetᵢ the constraints are z non-decreasing.
	type block struct {
		sum   float64
		count int
	}
	var blocks []block
	for i := range ids {
		blocks = append(blocks, block{want[i] - offset[i], 1})
		for len(blocks) > 1 {
			a, b := blocks[len(blocks)-2], blocks[len(blocks)-1]
			if a.sum/float64(a.count) <= b.sum/float64(b.count) {
				break
			}
			blocks = append(blocks[:len(blocks)-2], block{a.sum + b.sum, a.count + b.count})
		}
	}
	i := 0
	for _, b := range blocks {
		z := b.sum / float64(b.count)
		for range b.count {
			l.vs[ids[i]].y = z + offset[i]
			i++
		}
	}
}

func (l *layered) result(g Graph, selfs []int, o Options) Layout {
	out := Layout{Crossings: l.crossings()}
	for i, n := range g.Nodes {
		v := l.vs[i]
		p := PlacedNode{ID: n.ID, Rank: v.rank, Order: v.pos, X: v.x - v.w/2, Y: v.y - v.h/2, W: v.w, H: v.h}
		out.Nodes = append(out.Nodes, p)
		out.Width = max(out.Width, p.X+p.W+o.Margin)
		out.Height = max(out.Height, p.Y+p.H+o.Margin)
	}
	edges := make([]PlacedEdge, len(g.Edges))
	placed := make([]bool, len(g.Edges))
	for _, c := range l.chains {
		pts := make([]Point, 0, len(c.vs))
		for k, id := range c.vs {
			v := l.vs[id]
			switch {
			case k == 0:
				pts = append(pts, Point{v.x + v.w/2, v.y})
			case k == len(c.vs)-1:
				pts = append(pts, Point{v.x - v.w/2, v.y})
			default:
				pts = append(pts, Point{v.x, v.y})
			}
			out.Height = max(out.Height, v.y+o.Margin)
		}
		if c.reversed {
			slices.Reverse(pts)
		}
		e := g.Edges[c.edge]
		edges[c.edge] = PlacedEdge{From: e.From, To: e.To, Points: pts, Reversed: c.reversed,
			Label: Point{(pts[0].X + pts[1].X) / 2, (pts[0].Y + pts[1].Y) / 2}}
		placed[c.edge] = true
	}
	for _, i := range selfs {
		e := g.Edges[i]
		n := out.Nodes[slices.IndexFunc(g.Nodes, func(n Node) bool { return n.ID == e.From })]
		right, left, top := Point{n.X + n.W*0.75, n.Y}, Point{n.X + n.W*0.25, n.Y}, n.Y-18
		edges[i] = PlacedEdge{From: e.From, To: e.To, Self: true,
			Points: []Point{right, {right.X, top}, {left.X, top}, left}, Label: Point{n.X + n.W/2, top - 6}}
		placed[i] = true
	}
	for i, e := range g.Edges {
		if placed[i] {
			out.Edges = append(out.Edges, edges[i])
		} else { // an end that is no node: nothing to draw
			out.Edges = append(out.Edges, PlacedEdge{From: e.From, To: e.To})
		}
	}
	// A self-loop's arc may rise above the margin: shift everything down.
	if len(selfs) > 0 {
		shift := 0.0
		for _, e := range out.Edges {
			for _, p := range e.Points {
				shift = max(shift, o.Margin+8-p.Y)
			}
		}
		if shift > 0 {
			out.translate(shift)
		}
	}
	return out
}

func (l *Layout) translate(dy float64) {
	for i := range l.Nodes {
		l.Nodes[i].Y += dy
	}
	for i := range l.Edges {
		for k := range l.Edges[i].Points {
			l.Edges[i].Points[k].Y += dy
		}
		l.Edges[i].Label.Y += dy
	}
	l.Height += dy
}
