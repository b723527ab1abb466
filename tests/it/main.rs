//! Integration tests: a real redis-server and a real jobwire server per test.
