// dbclients talks to real servers through the Go client libraries Debian packages, so that
// goprobe's sql and redis packs are checked against them: it runs statements and commands with
// known counts and prints them. Built in GOPATH mode against /usr/share/gocode (the module proxy
// is not reachable): go-sql-driver/mysql against MariaDB, lib/pq against PostgreSQL, redigo
// against Redis.
//
//   - sql (-mysql ADDR or -postgres ADDR): -fast times `SELECT <i> + 1` with a different literal
//     each time (one statement once normalised), then -slow times `SELECT SLEEP(0.005)`
//     (`SELECT pg_sleep(0.005)` on PostgreSQL);
//   - redis (-redis ADDR): -set times SET, then -get times GET.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"

	_ "github.com/go-sql-driver/mysql"
	"github.com/gomodule/redigo/redis"
	_ "github.com/lib/pq"

	"goprobe.test/progs/internal/harness"
)

func main() {
	mysqlAddr := flag.String("mysql", "", "MariaDB address (host:port); empty: no SQL")
	pgAddr := flag.String("postgres", "", "PostgreSQL address (host:port); empty: no PostgreSQL")
	redisAddr := flag.String("redis", "", "Redis address (host:port); empty: no Redis")
	fast := flag.Int("fast", 200, "fast statements")
	slow := flag.Int("slow", 40, "slow statements")
	sets := flag.Int("set", 150, "SET commands")
	gets := flag.Int("get", 250, "GET commands")
	harness.Start()
	result := map[string]int{}
	ctx := context.Background()

	if *mysqlAddr != "" {
		runSQL(ctx, "mysql", fmt.Sprintf("root@tcp(%s)/", *mysqlAddr), "SELECT SLEEP(0.005)", *fast, *slow, result)
	}
	if *pgAddr != "" {
		dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", *pgAddr)
		runSQL(ctx, "postgres", dsn, "SELECT pg_sleep(0.005)", *fast, *slow, result)
	}

	if *redisAddr != "" {
		c, err := redis.Dial("tcp", *redisAddr)
		if err != nil {
			harness.Fail("redis.Dial: %v", err)
		}
		for i := 0; i < *sets; i++ {
			if _, err := c.Do("SET", fmt.Sprintf("goprobe:%d", i%10), i); err != nil {
				harness.Fail("SET: %v", err)
			}
			result["set"]++
		}
		for i := 0; i < *gets; i++ {
			if _, err := redis.Int(c.Do("GET", fmt.Sprintf("goprobe:%d", i%10))); err != nil {
				harness.Fail("GET: %v", err)
			}
			result["get"]++
		}
		c.Close()
	}
	harness.Result(result)
}

// runSQL makes `fast` queries `SELECT <i> + 1`, each with its own literal, then `slow` executions
// of `sleep`, through database/sql and the named driver, and counts them in result.
func runSQL(ctx context.Context, driver, dsn, sleep string, fast, slow int, result map[string]int) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		harness.Fail("sql.Open: %v", err)
	}
	db.SetMaxOpenConns(2)
	for i := 0; i < fast; i++ {
		var n int
		rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT %d + 1", i))
		if err != nil {
			harness.Fail("query: %v", err)
		}
		for rows.Next() {
			_ = rows.Scan(&n)
		}
		rows.Close()
		if n != i+1 {
			harness.Fail("SELECT %d + 1 gave %d", i, n)
		}
		result["fast"]++
	}
	for i := 0; i < slow; i++ {
		if _, err := db.ExecContext(ctx, sleep); err != nil {
			harness.Fail("exec: %v", err)
		}
		result["slow"]++
	}
	db.Close()
}
