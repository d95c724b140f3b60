package schema_test

import (
	"fmt"

	"github.com/stepflow/stepflow/schema"
)

func ExampleTables_Validate() {
	tables := schema.DefaultTables()
	tables.Statuses = "runs; DROP TABLE flowcraft_contexts"
	fmt.Println(tables.Validate())

	tables.Statuses = "my_runs"
	fmt.Println(tables.Validate(), tables.Quoted().Statuses)
	// Output:
	// schema: invalid table name: Statuses = "runs; DROP TABLE flowcraft_contexts": must match ^[a-z_][a-z0-9_]{0,62}$
	// <nil> "my_runs"
}
