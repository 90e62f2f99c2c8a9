//! `RedisStore` against a real `redis-server` that each test starts on a free port.

mod contract;
mod lease;
