//! The prompt tokenizer: CLIP's BPE from `tokenizer.json` or `vocab.json` + `merges.txt`.

use super::*;

/// The prompt tokenizer: CLIP's BPE, `<|startoftext|>` … `<|endoftext|>`, padded to the text
/// encoder's length.
pub struct PromptTokenizer {
    inner: tokenizers::Tokenizer,
    pub(super) bos: u32,
    pub(super) eos: u32,
    pad: u32,
    len: usize,
}

pub(super) fn tok_err(e: impl std::fmt::Display) -> SdError {
    SdError::Tokenizer(e.to_string())
}

impl PromptTokenizer {
    /// Loads `tokenizer/tokenizer.json`, else `vocab.json` + `merges.txt`, from `dir`.
    pub fn load(dir: &Path, len: usize) -> Result<Self, SdError> {
        let json = dir.join(TOKENIZER_JSON);
        let inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(tok_err)?
        } else {
            let (vocab, merges) = (dir.join(TOKENIZER_VOCAB), dir.join(TOKENIZER_MERGES));
            if !vocab.is_file() || !merges.is_file() {
                return Err(SdError::Tokenizer(format!(
                    "neither {} nor {} + {} exists",
                    json.display(),
                    vocab.display(),
                    merges.display()
                )));
            }
            let bpe = tokenizers::models::bpe::BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .end_of_word_suffix("</w>".into())
                .unk_token("<|endoftext|>".into())
                .build()
                .map_err(tok_err)?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_normalizer(Some(tokenizers::normalizers::Lowercase)).map_err(tok_err)?;
            t.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace));
            t
        };
        let id = |tok: &str| {
            inner.token_to_id(tok).ok_or_else(|| SdError::Tokenizer(format!("the vocabulary has no `{tok}`")))
        };
        let bos = id("<|startoftext|>")?;
        let eos = id("<|endoftext|>")?;
        let pad_tok: Option<String> = std::fs::read(dir.join(TOKENIZER_SPECIAL))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| match &v["pad_token"] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
                _ => None,
            });
        let pad = match pad_tok {
            Some(p) => id(&p)?,
            None => eos,
        };
        if len < 2 {
            return Err(SdError::Config("text_encoder: max_position_embeddings < 2".into()));
        }
        Ok(PromptTokenizer { inner, bos, eos, pad, len })
    }

    /// Largest id this tokenizer produces.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `len` ids: BOS, the prompt (truncated), EOS, padding.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, SdError> {
        let enc = self.inner.encode(text, true).map_err(tok_err)?;
        let body: Vec<u32> =
            enc.get_ids().iter().copied().filter(|&i| i != self.bos && i != self.eos).take(self.len - 2).collect();
        let mut ids = Vec::with_capacity(self.len);
        ids.push(self.bos);
        ids.extend(body);
        ids.push(self.eos);
        ids.resize(self.len, self.pad);
        Ok(ids)
    }
}
