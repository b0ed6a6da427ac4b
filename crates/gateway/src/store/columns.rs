//! Reading a row's columns by name, the same way from both kinds of row the store sees: sqlx's
//! `AnyRow` and a `rusqlite::Row` from the inline SQLite reads (`sqlite_reads`). Each table's
//! `from_row` is written once against this trait.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;

/// Typed column access by name.
pub(super) trait Columns {
    /// An integer column.
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError>;
    /// A text column.
    fn text(&self, name: &str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError>;
}

impl Columns for AnyRow {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(name)?)
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(name)?)
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.try_get(name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.get(name)?)
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get(name)?)
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.get(name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(name)?)
    }
}

/// The columns `{prefix}{name}` of a joined row, read as `name`: lets one table's `from_row`
/// read its part of a join whose column names would otherwise clash (`id`, `created_at`).
pub(super) struct Prefixed<'a, R: ?Sized>(pub &'a R, pub &'static str);

impl<R: Columns + ?Sized> Prefixed<'_, R> {
    /// Calls `read` with `{prefix}{name}`, built on the stack when it is short (as every column
    /// name is): authentication reads a user's columns this way on every request.
    fn with_name<T>(&self, name: &str, read: impl FnOnce(&str) -> T) -> T {
        let (prefix, rest) = (self.1.as_bytes(), name.as_bytes());
        let len = prefix.len() + rest.len();
        let mut buf = [0u8; 64];
        if let Some(full) = buf.get_mut(..len) {
            full[..prefix.len()].copy_from_slice(prefix);
            full[prefix.len()..].copy_from_slice(rest);
            if let Ok(full) = std::str::from_utf8(full) {
                return read(full);
            }
        }
        read(&format!("{}{name}", self.1))
    }
}

impl<R: Columns + ?Sized> Columns for Prefixed<'_, R> {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        self.with_name(name, |full| self.0.int(full))
    }
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        self.with_name(name, |full| self.0.opt_int(full))
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        self.with_name(name, |full| self.0.text(full))
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.with_name(name, |full| self.0.opt_text(full))
    }
}
