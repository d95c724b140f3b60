package store

import (
	"crypto/sha256"
	"errors"
)

// Webhooks: a webhook step's endpoint is a URL with a random token (see
// function's webhook endpoints). The step's row keeps the token's SHA-256
// (webhook_hash), written by the commit that records the step's success,
// and the time the endpoint was used (webhook_used_at), written by the
// resume it made: the token itself is stored nowhere but in the URL.

// ErrWebhookNotFound is returned for a webhook request whose run, webhook
// step or token matches nothing (the three are not told apart). Nothing
// changed.
var ErrWebhookNotFound = errors.New("no such webhook")

// ErrWebhookUsed is returned for a request to a webhook endpoint that
// resumed its run already: each endpoint resumes once. Nothing changed.
var ErrWebhookUsed = errors.New("webhook used already")

// HashWebhookToken is what the store keeps of a webhook endpoint's token.
func HashWebhookToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// webhookHashSQL stores hash $3 with the webhook step $2 of run $1, in the
// commit that records the step's success.
func (s *Store) webhookHashSQL() string {
	return `UPDATE ` + s.tables.Steps + ` SET webhook_hash = $3 WHERE run_id = $1 AND node_id = $2`
}
