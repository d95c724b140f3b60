package workflow

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeValidate feeds arbitrary documents to Decode and Compile. They
// must never panic, and a document Decode accepts must survive a
// marshal/Decode round trip with the same Digest.
func FuzzDecodeValidate(f *testing.F) {
	seeds := []string{
		// valid
		`{"id":"order","metadata":{"version":"3"},
		 "nodes":[{"id":"charge","uses":"transform","params":{"expression":"input","currency":"EUR"},
		           "config":{"maxRetries":3,"retryDelay":500,"timeout":10000,"fallback":"refund"}},
		          {"id":"refund","uses":"noop"},
		          {"id":"ship","uses":"noop","inputs":"charge"},
		          {"id":"notify","uses":"noop","inputs":{"order":"charge","who":"_user"},"config":{"joinStrategy":"any"}}],
		 "edges":[{"source":"charge","target":"ship","action":"paid"},
		          {"source":"charge","target":"notify","condition":"result.output.amount > 100","transform":"input.amount"}]}`,
		`{"id":"z","nodes":[{"id":"z","uses":"sleep","params":{"duration":"1.5s"}}]}`,
		`{"id":"n","metadata":null,"nodes":[{"id":"a","uses":"noop","params":null,"inputs":null,"config":null}],"edges":null}`,
		`{"id":"j","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"},{"id":"j","uses":"noop"}],
		 "edges":[{"source":"a","target":"j"},{"source":"b","target":"j"}]}`,
		`{"id":"l","nodes":[{"id":"i","uses":"noop"},{"id":"c","uses":"loop-controller","params":{"condition":"count < 5"}},{"id":"b","uses":"noop","_sourceLocation":{"line":1}}],
		 "edges":[{"source":"i","target":"c"},{"source":"c","target":"b","action":"continue"},{"source":"b","target":"c"}]}`,
		`{"id":"b","nodes":[{"id":"s","uses":"batch-scatter","params":{"workerUsesKey":"noop","gatherNodeId":"g","chunkSize":2}},{"id":"g","uses":"batch-gather","params":{"outputKey":"o"}},{"id":"f","uses":"subflow","params":{"blueprintId":"b"}}],
		 "edges":[{"source":"s","target":"g"},{"source":"g","target":"f"}]}`,
		// invalid
		`{"id":"c","nodes":[{"id":"a","uses":"noop"},{"id":"b","uses":"noop"}],"edges":[{"source":"a","target":"b"},{"source":"b","target":"a"}]}`,
		`{"id":"f","nodes":[{"id":"a","uses":"noop","config":{"fallback":"b"}},{"id":"b","uses":"noop","config":{"fallback":"a"}}]}`,
		`{"id":"d","nodes":[{"id":"a","uses":"noop","config":{"maxRety":3}}]}`,
		`{"id":"d","nodes":[{"id":"a","uses":"nope","config":{"maxRetries":-1,"timeout":1e30}}]}`,
		`{"id":"e","nodes":[{"id":"a","uses":"noop"}],"edges":[{"source":"a","target":"a","condition":"result.output >"}]}`,
		`{"id":"t","nodes":[{"id":"t","uses":"transform","params":{"expression":"outputs[\"x\"] + context.y","action":3}}]}`,
		`{"id":"u","nodes":[{"id":"a","uses":"noop","inputs":{"x":1}}]}`,
		`{"id":"\ud800","nodes":[{"id":"<a>","uses":"noop","params":{"big":1e308,"neg":-0,"s":"\u0000"}}]}`,
		`[]`, `null`, `{`, `{"id":"x"} trailing`, ``,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		bp, err := Decode(data)
		if err != nil {
			if bp != nil {
				t.Fatalf("Decode returned a blueprint with error %v", err)
			}
			return
		}
		_, _ = Compile(bp, reg)
		_, _ = Compile(bp, nil)
		again, err := json.Marshal(bp)
		if err != nil {
			t.Fatalf("marshal a decoded blueprint: %v", err)
		}
		bp2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-decode %s: %v", again, err)
		}
		if d1, d2 := bp.Digest(), bp2.Digest(); d1 != d2 {
			t.Fatalf("digest changed across a round trip: %s != %s\n%s", d1, d2, again)
		}
	})
}
