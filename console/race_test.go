//go:build race

package console_test

// raceDetector slows the server several times over (make test runs with
// -race): the speed tests then allow more.
const raceDetector = true
