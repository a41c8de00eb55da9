module goprobe.test/progs

go 1.19
