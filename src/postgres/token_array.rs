//! A `text[]` of tokens built in one go. pgrx turns a `Vec<Option<String>>` into an array by
//! copying each string into a `text` and that again into the array's working state; tokens
//! have one length and live inline ([`Token`]), so this writes each as a `text` once into a
//! reusable buffer and lets `construct_md_array()` copy it into the array: one copy per token,
//! no allocation per token.

use crate::mask::{Token, TOKEN_LEN};
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::IntoDatum;

/// Tokens aligned with the values they mask (NULL stays NULL), returned to SQL as `text[]`.
#[derive(Debug, Default)]
pub struct TokenArray(pub Vec<Option<Token>>);

/// One token as a `text` datum: a 4-byte varlena header and the characters.
#[repr(C, align(4))]
struct TextToken {
    header: u32,
    chars: [u8; TOKEN_LEN],
}

impl IntoDatum for TokenArray {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let n = self.0.len();
        // SAFETY: a plain call; the result is palloc'd in the current memory context.
        if n == 0 {
            return Some(unsafe { pg_sys::construct_empty_array(pg_sys::TEXTOID) }.into());
        }
        let mut texts: Vec<TextToken> = Vec::with_capacity(n);
        let mut nulls: Vec<bool> = Vec::with_capacity(n);
        for t in &self.0 {
            let mut text = TextToken {
                header: 0,
                chars: t.map(|t| *t.as_bytes()).unwrap_or([0; TOKEN_LEN]),
            };
            // SAFETY: `text` is a 4-byte aligned header followed by TOKEN_LEN bytes.
            unsafe {
                pgrx::set_varsize_4b((&mut text as *mut TextToken).cast(), (4 + TOKEN_LEN) as i32)
            };
            texts.push(text);
            nulls.push(t.is_none());
        }
        let mut datums: Vec<pg_sys::Datum> = texts
            .iter()
            .map(|t| pg_sys::Datum::from(t as *const TextToken))
            .collect();
        let (mut dims, mut lbs) = ([n as i32], [1i32]);
        // SAFETY: n datums pointing at valid uncompressed `text` values (alive until the call
        // returns: the array holds copies), n null flags, one dimension of n starting at 1;
        // text is varlena (-1), passed by reference, int-aligned.
        let array = unsafe {
            pg_sys::construct_md_array(
                datums.as_mut_ptr(),
                nulls.as_mut_ptr(),
                1,
                dims.as_mut_ptr(),
                lbs.as_mut_ptr(),
                pg_sys::TEXTOID,
                -1,
                false,
                pg_sys::TYPALIGN_INT as std::ffi::c_char,
            )
        };
        Some(array.into())
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::TEXTARRAYOID
    }
}

// SAFETY: the SQL type is exactly `text[]`, as for `Vec<Option<String>>`.
unsafe impl SqlTranslatable for TokenArray {
    const TYPE_IDENT: &'static str = <Vec<Option<String>> as SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: TypeOrigin = <Vec<Option<String>> as SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> =
        <Vec<Option<String>> as SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        <Vec<Option<String>> as SqlTranslatable>::RETURN_SQL;
}

// SAFETY: the datum is returned as the function's result, as pgrx does for a `Vec`.
unsafe impl pgrx::callconv::BoxRet for TokenArray {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}
