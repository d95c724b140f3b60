package client

import (
	"errors"

	"github.com/stepflow/stepflow/internal/store"
)

// ErrTimeout is returned by Wait when ctx ends before the run does.
var ErrTimeout = errors.New("timed out waiting for the run")

// ErrRunNotFound is returned for a run id that names no run.
var ErrRunNotFound = errors.New("run not found")

// ErrRunExists is returned by Start for a run id that is taken.
var ErrRunExists = errors.New("run already exists")

// ownError gives the store's sentinel errors the client's names, so that a
// caller tests errors.Is(err, client.ErrRunNotFound) and never imports the
// store; the message (which names the run) is the store's.
func ownError(err error) error {
	for _, s := range []struct{ store, own error }{
		{store.ErrRunNotFound, ErrRunNotFound},
		{store.ErrRunExists, ErrRunExists},
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
