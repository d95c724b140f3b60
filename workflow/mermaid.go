package workflow

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Mermaid renders bp as a Mermaid flowchart, top down, for docs and the
// CLI:
//
//   - one line per node, `n0["id<br/>uses"]`, in declaration order; node
//     ids are generated (n0, n1, …) because blueprint ids may hold
//     characters Mermaid reads as syntax; "any" joins are hexagons
//     `n3{{"id<br/>uses"}}`;
//   - one line per edge, in declaration order, labelled with its action
//     and condition: `n0 -->|"action: big; if result.output.total #62; 100"| n1`
//     (transforms are not shown);
//   - one dotted line per fallback: `n1 -.->|fallback| n4`;
//   - a batch's workers, which exist only at run time, as one box after
//     the nodes, `n5(["workers<br/>double ×item"])`, between dotted
//     lines from the batch-scatter and to its gather:
//     `n0 -.->|"each item"| n5` and `n5 -.-> n1`;
//   - a subflow node, which runs another blueprint, as a subroutine box
//     `n2[["sub<br/>subflow"]]`.
//
// Text is escaped with Mermaid's entity codes (#34; for a quote, #60; for
// <, …) and whitespace runs become one space, so no id, expression or
// param can break the chart. An edge or fallback naming a node the
// blueprint lacks gets a node of its own, marked "(no such node)". The
// output depends only on bp, so it can be compared and committed.
func Mermaid(bp *Blueprint) string {
	var b strings.Builder
	b.WriteString("flowchart TD\n")
	if bp == nil {
		return b.String()
	}
	ids := map[string]string{}
	next := 0
	declare := func(nodeID, label, open, close string) string {
		id := "n" + strconv.Itoa(next)
		next++
		if _, dup := ids[nodeID]; !dup {
			ids[nodeID] = id
		}
		fmt.Fprintf(&b, "    %s%s\"%s\"%s\n", id, open, label, close)
		return id
	}
	ref := func(nodeID string) string {
		if id, ok := ids[nodeID]; ok {
			return id
		}
		return declare(nodeID, mermaidText(nodeID)+"<br/>(no such node)", "[", "]")
	}

	own := make([]string, len(bp.Nodes)) // each node's own chart id, also for duplicate ids
	for i, n := range bp.Nodes {
		open, close := "[", "]"
		switch {
		case n.Config != nil && n.Config.JoinStrategy == JoinAny:
			open, close = "{{", "}}"
		case isSubflow(n.Uses):
			open, close = "[[", "]]"
		}
		own[i] = declare(n.ID, mermaidText(n.ID)+"<br/>"+mermaidText(n.Uses), open, close)
	}
	type batch struct{ scatter, workers, gather string }
	var batches []batch
	for i, n := range bp.Nodes {
		if n.Uses != NodeBatchScatter {
			continue
		}
		worker, _ := n.Params["workerUsesKey"].(string)
		gather, _ := n.Params["gatherNodeId"].(string)
		workers := declare("\x00workers of "+n.ID, "workers<br/>"+mermaidText(worker)+" ×item", "([", "])")
		batches = append(batches, batch{own[i], workers, gather})
	}
	for _, e := range bp.Edges {
		src, dst := ref(e.Source), ref(e.Target)
		var label []string
		if e.Action != "" {
			label = append(label, "action: "+e.Action)
		}
		if e.Condition != "" {
			label = append(label, "if "+e.Condition)
		}
		if len(label) == 0 {
			fmt.Fprintf(&b, "    %s --> %s\n", src, dst)
			continue
		}
		fmt.Fprintf(&b, "    %s -->|\"%s\"| %s\n", src, mermaidText(strings.Join(label, "; ")), dst)
	}
	for _, bt := range batches {
		fmt.Fprintf(&b, "    %s -.->|\"each item\"| %s\n", bt.scatter, bt.workers)
		if bt.gather != "" {
			fmt.Fprintf(&b, "    %s -.-> %s\n", bt.workers, ref(bt.gather))
		}
	}
	for i, n := range bp.Nodes {
		if n.Config == nil || n.Config.Fallback == "" {
			continue
		}
		fmt.Fprintf(&b, "    %s -.->|fallback| %s\n", own[i], ref(n.Config.Fallback))
	}
	return b.String()
}

// mermaidEntities are the characters that would end a quoted label, open
// an HTML tag or entity, or end an edge label, with the decimal entity
// codes Mermaid turns back into them.
var mermaidEntities = strings.NewReplacer(
	`#`, "#35;", // first, so the codes below are not escaped again (Replacer does one pass)
	`"`, "#34;",
	`&`, "#38;",
	`<`, "#60;",
	`>`, "#62;",
	`|`, "#124;",
	"`", "#96;",
)

// mermaidText makes s safe inside a quoted Mermaid label: control
// characters and whitespace runs become one space, and syntax characters
// become entity codes.
func mermaidText(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return mermaidEntities.Replace(strings.Join(strings.Fields(s), " "))
}
