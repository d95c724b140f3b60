package function

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/url"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// webhookTokenBytes is the randomness of a webhook endpoint's token: 256
// bits, base64url in the URL.
const webhookTokenBytes = 32

// stepWebhooks makes the endpoint of a webhook step's attempt:
// <PublicURL>/webhooks/<run>/<step>/<token>, served by the API server. It
// keeps the token's hash for the commit that records the step's success
// (store.Outcome.WebhookHash); the token itself is only in the URL, the
// step's output. An attempt whose result is not committed (a duplicate, a
// failure) leaves no endpoint behind.
type stepWebhooks struct {
	base string
	hash []byte
}

func (e *stepWebhooks) Register(_ context.Context, in workflow.NodeInput) (workflow.Webhook, error) {
	b := make([]byte, webhookTokenBytes)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (it panics first)
	token := base64.RawURLEncoding.EncodeToString(b)
	e.hash = store.HashWebhookToken(token)
	return workflow.Webhook{
		URL:   e.base + "/webhooks/" + url.PathEscape(in.RunID) + "/" + url.PathEscape(in.Key()) + "/" + token,
		Event: workflow.WebhookEvent(in.NodeID),
	}, nil
}
