package client

import (
	"encoding/json"
	"errors"

	"github.com/stepflow/stepflow/internal/store"
)

// ErrTimeout is returned by Wait when ctx ends before the run does.
var ErrTimeout = errors.New("timed out waiting for the run")

// ErrRunNotFound is returned for a run id that names no run.
var ErrRunNotFound = errors.New("run not found")

// ErrRunExists is returned by Start for a run id that is taken.
var ErrRunExists = errors.New("run already exists")

// ErrBlueprintNotFound is returned by Blueprint for an id no stored
// snapshot has.
var ErrBlueprintNotFound = errors.New("blueprint not found")

// ErrNotAwaiting is returned by Resume for a step that does not await (not
// reached yet, resumed already, no wait node) or a run that is neither
// running nor awaiting; the message says which. Nothing changed.
var ErrNotAwaiting = errors.New("not awaiting")

// ErrWebhookNotFound is returned by ResumeWebhook for a run, webhook step
// or token that matches nothing (not told apart). Nothing changed.
var ErrWebhookNotFound = errors.New("no such webhook")

// ErrWebhookUsed is returned by ResumeWebhook for an endpoint that resumed
// its run already: each is one-shot. Nothing changed.
var ErrWebhookUsed = errors.New("webhook used already")

// ErrInvalid is returned for a request the client refuses as asked, before
// it changes anything: a blueprint that does not validate, an input that
// is no JSON, a run id no job can carry, a filter or continuation token
// that does not parse. The message says which.
var ErrInvalid = errors.New("invalid request")

// invalid marks err as ErrInvalid, keeping err's own chain for errors.As.
func invalid(err error) error { return &sentinelError{err: err, is: ErrInvalid} }

// isEncodeError reports whether err is encoding/json refusing a value.
func isEncodeError(err error) bool {
	var unsupportedType *json.UnsupportedTypeError
	var unsupportedValue *json.UnsupportedValueError
	var marshaler *json.MarshalerError
	return errors.As(err, &unsupportedType) || errors.As(err, &unsupportedValue) || errors.As(err, &marshaler)
}

// ownError gives the store's sentinel errors the client's names, so that a
// caller tests errors.Is(err, client.ErrRunNotFound) and never imports the
// store; the message (which names the run) is the store's.
func ownError(err error) error {
	for _, s := range []struct{ store, own error }{
		{store.ErrRunNotFound, ErrRunNotFound},
		{store.ErrRunExists, ErrRunExists},
		{store.ErrBlueprintNotFound, ErrBlueprintNotFound},
		{store.ErrNotAwaiting, ErrNotAwaiting},
		{store.ErrWebhookNotFound, ErrWebhookNotFound},
		{store.ErrWebhookUsed, ErrWebhookUsed},
		{store.ErrInvalidResume, ErrInvalid},
	} {
		if errors.Is(err, s.store) {
			return &sentinelError{err: err, is: s.own}
		}
	}
	return err
}

type sentinelError struct{ err, is error }

func (e *sentinelError) Error() string { return e.err.Error() }

// Unwrap gives the client's sentinel and the cause, so errors.Is and
// errors.As still reach what the store wrapped.
func (e *sentinelError) Unwrap() []error { return []error{e.is, e.err} }
