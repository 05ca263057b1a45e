//! Where the database tests find PostgreSQL and MariaDB/MySQL, and URL helpers to give
//! each test a database (or connection parameters) of its own.
//!
//! `IMBUS_TEST_POSTGRES_URL` and `IMBUS_TEST_MYSQL_URL` name a server and a database the
//! tests may create others next to; they default to the local servers
//! (`postgres://postgres@127.0.0.1:5432/test`, `mysql://root@127.0.0.1:3306/test`).

/// The PostgreSQL server the tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("IMBUS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The MariaDB/MySQL server the tests use.
pub fn mysql_admin_url() -> String {
    std::env::var("IMBUS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// `url` with its database (path) replaced by `db`, its query kept.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| i + scheme_end);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` with the query parameter `param` (`name=value`) added.
pub fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("mysql://root@h:3306", "t2"),
            "mysql://root@h:3306/t2"
        );
        assert_eq!(with_param("mysql://h/d", "a=1"), "mysql://h/d?a=1");
        assert_eq!(with_param("mysql://h/d?a=1", "b=2"), "mysql://h/d?a=1&b=2");
    }
}
