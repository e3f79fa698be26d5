//! Whisper's tokenizer: byte-level BPE text tokens plus the special tokens that steer
//! decoding (start of transcript, language, task, timestamps).
//!
//! Loaded from a Hugging Face / CTranslate2 `tokenizer.json`. Every special token is
//! resolved by name from that file, never by a hard-coded id, because the ids differ
//! between English-only, multilingual and large-v3 vocabularies. Timestamp tokens
//! (`<|0.00|>` … `<|30.00|>`) are not listed in every `tokenizer.json` (the CTranslate2
//! English-only conversions lack them); they always follow `<|notimestamps|>`, so their
//! first id is derived from it when absent.
//!
//! Text is encoded with the BPE model alone: special-token markup inside user text (a
//! prompt containing `<|en|>`, say) is tokenized as ordinary text, never as a control
//! token. Decoding works on raw bytes, so a character split over several tokens comes
//! out whole, and a partial one turns into U+FFFD instead of failing.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::error::{Result, WhisperError};
use crate::longform::TIME_PRECISION;

/// Whisper's languages as (code, English name), in the order of their tokens in the
/// vocabulary: the language token of `LANGUAGES[i]` is `sot + 1 + i`. Models know the
/// first `num_languages` of them (99, or 100 for large-v3, which adds `yue`).
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// Other English names OpenAI's Whisper accepts for a language, as (alias, code).
const LANGUAGE_ALIASES: &[(&str, &str)] = &[
    ("burmese", "my"),
    ("valencian", "ca"),
    ("flemish", "nl"),
    ("haitian", "ht"),
    ("letzeburgesch", "lb"),
    ("pushto", "ps"),
    ("panjabi", "pa"),
    ("moldavian", "ro"),
    ("moldovan", "ro"),
    ("sinhalese", "si"),
    ("castilian", "es"),
    ("mandarin", "zh"),
];

/// Languages written without spaces between words: word timestamps split their text at
/// character (Unicode) boundaries instead of at spaces.
const NO_SPACE_LANGUAGES: &[&str] = &["zh", "ja", "th", "lo", "my", "yue"];

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Number of timestamp tokens, `<|0.00|>` to `<|30.00|>` in steps of 0.02 s.
const N_TIMESTAMPS: usize = 1501;

/// The language code for a code, an English name or one of OpenAI's aliases, ignoring
/// case and surrounding whitespace: `"EN"`, `"English"` and `"en"` all give `"en"`,
/// `"mandarin"` gives `"zh"`. Knows all 100 languages, whether or not a given model does.
pub fn language_code(code_or_name: &str) -> Option<&'static str> {
    let key = code_or_name.trim().to_lowercase();
    LANGUAGES
        .iter()
        .find(|(code, name)| *code == key || *name == key)
        .map(|(code, _)| *code)
        .or_else(|| {
            LANGUAGE_ALIASES
                .iter()
                .find(|(alias, _)| *alias == key)
                .map(|(_, code)| *code)
        })
}

/// The English name of a language code (`"de"` gives `"german"`).
pub fn language_name(code: &str) -> Option<&'static str> {
    LANGUAGES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
}

/// What the decoder is asked to do with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Task {
    /// Write down the speech in its own language.
    #[default]
    Transcribe,
    /// Write down the speech translated into English.
    Translate,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Task {
    type Err = WhisperError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transcribe" => Ok(Task::Transcribe),
            "translate" => Ok(Task::Translate),
            other => Err(WhisperError::InvalidOption(format!(
                "unknown task `{other}` (expected `transcribe` or `translate`)"
            ))),
        }
    }
}

/// GPT-2's byte-level alphabet, inverted: the byte each printable stand-in char means.
fn byte_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).expect("valid code point");
            n += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

fn tokenizer_err(detail: impl fmt::Display) -> WhisperError {
    WhisperError::Tokenizer(detail.to_string())
}

/// Whether a vocabulary of `n_vocab` entries is multilingual, and how many languages it
/// has: multilingual iff `n_vocab >= 51865`, with `n_vocab - 51765 - multilingual`
/// languages (99, or 100 for large-v3).
fn vocabulary_languages(n_vocab: usize) -> Result<(bool, usize)> {
    let multilingual = n_vocab >= 51865;
    let num_languages = n_vocab
        .checked_sub(51765 + usize::from(multilingual))
        .filter(|n| (1..=LANGUAGES.len()).contains(n))
        .ok_or_else(|| tokenizer_err(format!("n_vocab {n_vocab} is not a Whisper vocabulary")))?;
    Ok((multilingual, num_languages))
}

/// Takes the added (special) tokens out of a parsed tokenizer.json and keeps just the BPE
/// model for encoding, so that encoding never yields a control token. Returns the added
/// tokens as (text, id) in file order, and the BPE tokenizer.
fn split_added_tokens(
    value: &mut serde_json::Value,
) -> Result<(Vec<(String, u32)>, tokenizers::Tokenizer)> {
    let obj = value
        .as_object_mut()
        .ok_or_else(|| tokenizer_err("tokenizer.json is not a JSON object"))?;
    let mut added = Vec::new();
    if let Some(list) = obj.get("added_tokens").and_then(|a| a.as_array()) {
        for token in list {
            let id = token.get("id").and_then(|v| v.as_u64());
            let content = token.get("content").and_then(|v| v.as_str());
            let (Some(id), Some(content)) = (id, content) else {
                return Err(tokenizer_err("malformed entry in added_tokens"));
            };
            let id = u32::try_from(id).map_err(|_| tokenizer_err("token id out of range"))?;
            added.push((content.to_owned(), id));
        }
    }
    obj.insert("added_tokens".into(), serde_json::Value::Array(Vec::new()));
    for key in ["post_processor", "truncation", "padding", "normalizer"] {
        obj.insert(key.into(), serde_json::Value::Null);
    }
    let bpe = serde_json::from_value(value.take())
        .map_err(|e| tokenizer_err(format!("invalid tokenizer.json: {e}")))?;
    Ok((added, bpe))
}

/// Token ids by their text: the tokenizer.json's added tokens first (the last entry of a
/// repeated text wins), then the BPE vocabulary.
struct Vocabulary<'a> {
    added: HashMap<&'a str, u32>,
    bpe: &'a tokenizers::Tokenizer,
}

impl<'a> Vocabulary<'a> {
    fn new(added: &'a [(String, u32)], bpe: &'a tokenizers::Tokenizer) -> Self {
        let added = added
            .iter()
            .map(|(name, id)| (name.as_str(), *id))
            .collect();
        Vocabulary { added, bpe }
    }

    fn lookup(&self, name: &str) -> Option<u32> {
        self.added
            .get(name)
            .copied()
            .or_else(|| self.bpe.token_to_id(name))
    }

    fn require(&self, name: &str) -> Result<u32> {
        self.lookup(name)
            .ok_or_else(|| tokenizer_err(format!("vocabulary lacks {name}")))
    }

    /// The tokens of the first `num_languages` of [`LANGUAGES`], in that order.
    fn language_tokens(&self, num_languages: usize) -> Result<Vec<u32>> {
        LANGUAGES[..num_languages]
            .iter()
            .map(|(code, _)| {
                // Hugging Face's English-only vocabularies spell Hebrew's token `<|iw|>`.
                let legacy = match *code {
                    "he" => self.lookup("<|iw|>"),
                    _ => None,
                };
                self.lookup(&format!("<|{code}|>"))
                    .or(legacy)
                    .ok_or_else(|| tokenizer_err(format!("vocabulary lacks <|{code}|>")))
            })
            .collect()
    }
}

/// The control tokens that steer decoding, resolved by name.
#[derive(Clone, Copy)]
struct SpecialTokens {
    sot: u32,
    eot: u32,
    transcribe: u32,
    translate: u32,
    sot_lm: u32,
    sot_prev: u32,
    no_speech: u32,
    no_timestamps: u32,
    timestamp_begin: u32,
}

impl SpecialTokens {
    /// Resolves every control token in `vocabulary`, and checks that the timestamp tokens
    /// end the vocabulary of a model with `n_vocab` entries.
    fn resolve(vocabulary: &Vocabulary<'_>, n_vocab: usize) -> Result<Self> {
        let require = |name: &str| vocabulary.require(name);
        let eot = require("<|endoftext|>")?;
        let sot = require("<|startoftranscript|>")?;
        let transcribe = require("<|transcribe|>")?;
        let translate = require("<|translate|>")?;
        let sot_lm = require("<|startoflm|>")?;
        let sot_prev = require("<|startofprev|>")?;
        let no_speech = vocabulary
            .lookup("<|nospeech|>")
            .or_else(|| vocabulary.lookup("<|nocaptions|>"))
            .ok_or_else(|| tokenizer_err("vocabulary lacks <|nospeech|> and <|nocaptions|>"))?;
        let no_timestamps = require("<|notimestamps|>")?;
        let timestamp_begin = vocabulary.lookup("<|0.00|>").unwrap_or(no_timestamps + 1);
        if timestamp_begin as usize + N_TIMESTAMPS != n_vocab {
            return Err(tokenizer_err(format!(
                "timestamp tokens start at {timestamp_begin}, which does not fit a model \
                 with n_vocab {n_vocab} (wrong tokenizer.json for this model?)"
            )));
        }
        Ok(SpecialTokens {
            sot,
            eot,
            transcribe,
            translate,
            sot_lm,
            sot_prev,
            no_speech,
            no_timestamps,
            timestamp_begin,
        })
    }
}

/// The bytes of each text token `0..eot`, mapped back from GPT-2's printable stand-ins
/// (characters outside that alphabet are kept as their UTF-8).
fn text_token_bytes(bpe: &tokenizers::Tokenizer, eot: u32) -> Vec<Vec<u8>> {
    let decoder = byte_decoder();
    (0..eot)
        .map(|id| {
            bpe.id_to_token(id)
                .map(|token| {
                    let mut bytes = Vec::with_capacity(token.len());
                    for c in token.chars() {
                        match decoder.get(&c) {
                            Some(b) => bytes.push(*b),
                            None => {
                                let mut buf = [0u8; 4];
                                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                    bytes
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Whisper's tokenizer for one model's vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    /// The BPE model and its byte-level pre-tokenizer, without added tokens, so that
    /// encoding never produces control tokens.
    bpe: tokenizers::Tokenizer,
    /// Bytes of each text token, indexed by id; ids `0..eot`.
    token_bytes: Vec<Vec<u8>>,
    /// Names of the special tokens (ids >= eot) that the tokenizer.json lists.
    special_by_id: HashMap<u32, String>,
    n_vocab: usize,
    multilingual: bool,
    num_languages: usize,
    special: SpecialTokens,
    /// Language tokens in `LANGUAGES` order, the model's first `num_languages`.
    language_tokens: Vec<u32>,
    non_speech_tokens: Vec<u32>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_vocab", &self.n_vocab)
            .field("multilingual", &self.multilingual)
            .field("num_languages", &self.num_languages)
            .field("sot", &self.special.sot)
            .field("eot", &self.special.eot)
            .field("no_timestamps", &self.special.no_timestamps)
            .field("timestamp_begin", &self.special.timestamp_begin)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` for a model whose vocabulary has `n_vocab` entries
    /// (`ModelDims::n_vocab`): multilingual iff `n_vocab >= 51865`, with
    /// `n_vocab - 51765 - multilingual` languages (99, or 100 for large-v3).
    pub fn from_file(path: impl AsRef<Path>, n_vocab: usize) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| WhisperError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_bytes(&bytes, n_vocab)
            .map_err(|e| tokenizer_err(format!("{}: {e}", path.display())))
    }

    /// Like [`Tokenizer::from_file`], from the contents of a tokenizer.json.
    fn from_json_bytes(json: &[u8], n_vocab: usize) -> Result<Self> {
        let mut value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| tokenizer_err(format!("invalid tokenizer.json: {e}")))?;
        Self::from_json_value(&mut value, n_vocab)
    }

    /// Builds the tokenizer from a parsed tokenizer.json (taken apart in the process): the
    /// BPE model for text, then every control token resolved by name.
    fn from_json_value(value: &mut serde_json::Value, n_vocab: usize) -> Result<Self> {
        let (multilingual, num_languages) = vocabulary_languages(n_vocab)?;
        let (added, bpe) = split_added_tokens(value)?;
        let vocabulary = Vocabulary::new(&added, &bpe);
        let special = SpecialTokens::resolve(&vocabulary, n_vocab)?;
        let language_tokens = vocabulary.language_tokens(num_languages)?;
        let token_bytes = text_token_bytes(&bpe, special.eot);
        let special_by_id = added.into_iter().map(|(name, id)| (id, name)).collect();
        let mut tokenizer = Tokenizer {
            bpe,
            token_bytes,
            special_by_id,
            n_vocab,
            multilingual,
            num_languages,
            special,
            language_tokens,
            non_speech_tokens: Vec::new(),
        };
        tokenizer.non_speech_tokens = tokenizer.compute_non_speech_tokens()?;
        Ok(tokenizer)
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }
    pub fn num_languages(&self) -> usize {
        self.num_languages
    }
    /// `<|startoftranscript|>`.
    pub fn sot(&self) -> u32 {
        self.special.sot
    }
    /// `<|endoftext|>`; every id from here on is a special or timestamp token.
    pub fn eot(&self) -> u32 {
        self.special.eot
    }
    pub fn transcribe(&self) -> u32 {
        self.special.transcribe
    }
    pub fn translate(&self) -> u32 {
        self.special.translate
    }
    /// `<|startoflm|>`.
    pub fn sot_lm(&self) -> u32 {
        self.special.sot_lm
    }
    /// `<|startofprev|>`, which introduces the prompt (previous text).
    pub fn sot_prev(&self) -> u32 {
        self.special.sot_prev
    }
    /// `<|nospeech|>` (`<|nocaptions|>` in older vocabularies).
    pub fn no_speech(&self) -> u32 {
        self.special.no_speech
    }
    /// `<|notimestamps|>`.
    pub fn no_timestamps(&self) -> u32 {
        self.special.no_timestamps
    }
    /// `<|0.00|>`, the first timestamp token.
    pub fn timestamp_begin(&self) -> u32 {
        self.special.timestamp_begin
    }
    /// `<|30.00|>`, the last timestamp token.
    fn timestamp_end(&self) -> u32 {
        self.special.timestamp_begin + (N_TIMESTAMPS as u32 - 1)
    }
    fn is_timestamp(&self, token: u32) -> bool {
        (self.special.timestamp_begin..=self.timestamp_end()).contains(&token)
    }
    /// The time a timestamp token stands for, in seconds.
    fn timestamp_seconds(&self, token: u32) -> Option<f64> {
        self.is_timestamp(token)
            .then(|| f64::from(token - self.special.timestamp_begin) * TIME_PRECISION)
    }

    /// The token of a language the model knows, given its code, name or alias.
    pub fn language_token(&self, language: &str) -> Result<u32> {
        let code = language_code(language)
            .ok_or_else(|| WhisperError::UnsupportedLanguage(language.to_owned()))?;
        let index = LANGUAGES
            .iter()
            .position(|(c, _)| *c == code)
            .expect("code comes from LANGUAGES");
        self.language_tokens
            .get(index)
            .copied()
            .ok_or_else(|| WhisperError::UnsupportedLanguage(language.to_owned()))
    }

    /// The language code of a language token, if it is one this model knows.
    pub fn to_language_code(&self, token: u32) -> Option<&'static str> {
        self.language_tokens
            .iter()
            .position(|&t| t == token)
            .map(|i| LANGUAGES[i].0)
    }

    /// The model's language tokens, in `LANGUAGES` order.
    pub fn all_language_tokens(&self) -> &[u32] {
        &self.language_tokens
    }

    /// Codes of the model's languages, matching [`Tokenizer::all_language_tokens`].
    pub fn all_language_codes(&self) -> Vec<&'static str> {
        LANGUAGES[..self.num_languages]
            .iter()
            .map(|(code, _)| *code)
            .collect()
    }

    /// The decoder's initial tokens: `[sot]` for English-only models, else
    /// `[sot, language, task]`, or `[sot, task]` when the language is not known yet.
    /// An English-only model accepts no language but English.
    pub fn sot_sequence(&self, language: Option<&str>, task: Task) -> Result<Vec<u32>> {
        if !self.multilingual {
            if let Some(lang) = language {
                if language_code(lang) != Some("en") {
                    return Err(WhisperError::UnsupportedLanguage(format!(
                        "{lang} (the model is English-only)"
                    )));
                }
            }
            return Ok(vec![self.special.sot]);
        }
        let mut seq = vec![self.special.sot];
        if let Some(lang) = language {
            seq.push(self.language_token(lang)?);
        }
        seq.push(match task {
            Task::Transcribe => self.special.transcribe,
            Task::Translate => self.special.translate,
        });
        Ok(seq)
    }

    /// [`Tokenizer::sot_sequence`] followed by `<|notimestamps|>`.
    #[cfg(test)]
    fn sot_sequence_including_notimestamps(
        &self,
        language: Option<&str>,
        task: Task,
    ) -> Result<Vec<u32>> {
        let mut seq = self.sot_sequence(language, task)?;
        seq.push(self.special.no_timestamps);
        Ok(seq)
    }

    /// Text tokens of `text`, with no special tokens added; special-token markup in the
    /// text is encoded as plain text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let encoding = self
            .bpe
            .encode_fast(text, false)
            .map_err(|e| tokenizer_err(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of the text tokens among `tokens`; special and timestamp tokens
    /// (ids >= eot) are dropped. Incomplete UTF-8 becomes U+FFFD.
    pub fn decode(&self, tokens: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            if t < self.special.eot {
                self.push_text_bytes(&mut bytes, t);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Like [`Tokenizer::decode`], but special tokens appear as their text and timestamp
    /// tokens as `<|1.08|>`.
    fn decode_with_timestamps(&self, tokens: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            if t < self.special.eot {
                self.push_text_bytes(&mut bytes, t);
            } else if let Some(seconds) = self.timestamp_seconds(t) {
                bytes.extend_from_slice(format!("<|{seconds:.2}|>").as_bytes());
            } else if let Some(name) = self.special_by_id.get(&t) {
                bytes.extend_from_slice(name.as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes of a text token (ids below `eot`); `None` for special tokens.
    pub fn token_bytes(&self, token: u32) -> Option<&[u8]> {
        if token < self.special.eot {
            self.token_bytes.get(token as usize).map(Vec::as_slice)
        } else {
            None
        }
    }

    fn push_text_bytes(&self, out: &mut Vec<u8>, token: u32) {
        if let Some(b) = self.token_bytes.get(token as usize) {
            out.extend_from_slice(b);
        }
    }

    /// Tokens to suppress so the model does not write speaker tags or other
    /// non-speech annotations ("(SPEAKING FOREIGN LANGUAGE)", "[DAVID] Hey there", "♪"),
    /// while keeping "-" and "'" between words. Sorted ascending. OpenAI's
    /// `non_speech_tokens`, the `-1` in `suppress_tokens`.
    pub fn non_speech_tokens(&self) -> &[u32] {
        &self.non_speech_tokens
    }

    fn compute_non_speech_tokens(&self) -> Result<Vec<u32>> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split_whitespace()
                .map(String::from),
        );
        // Miscellaneous symbols (U+2640..U+267F) may take several tokens; their UTF-8
        // forms share the first two bytes, so suppressing the first token is safe.
        let miscellaneous: Vec<String> = "♩♪♫♬♭♮♯".chars().map(String::from).collect();

        let mut result = std::collections::BTreeSet::new();
        // "-" and "'" are fine between words, not at the start of one.
        for s in [" -", " '"] {
            if let Some(&t) = self.encode(s)?.first() {
                result.insert(t);
            }
        }
        let misc_flags = symbols
            .iter()
            .map(|s| (s, false))
            .chain(miscellaneous.iter().map(|s| (s, true)));
        for (symbol, is_misc) in misc_flags {
            for text in [symbol.clone(), format!(" {symbol}")] {
                let tokens = self.encode(&text)?;
                if tokens.len() == 1 || (is_misc && !tokens.is_empty()) {
                    result.insert(tokens[0]);
                }
            }
        }
        Ok(result.into_iter().collect())
    }

    /// Splits tokens into words for word-level timestamps: at spaces and punctuation,
    /// or, for languages written without spaces (zh, ja, th, lo, my, yue), at every
    /// complete character. `language` is a code, name or alias; unknown means spaces.
    /// Returns the words and the tokens of each.
    pub fn split_to_word_tokens(
        &self,
        tokens: &[u32],
        language: Option<&str>,
    ) -> (Vec<String>, Vec<Vec<u32>>) {
        let no_spaces = language
            .and_then(language_code)
            .is_some_and(|code| NO_SPACE_LANGUAGES.contains(&code));
        if no_spaces {
            self.split_tokens_on_unicode(tokens)
        } else {
            self.split_tokens_on_spaces(tokens)
        }
    }

    /// Groups tokens into the shortest runs that decode to whole characters. Trailing
    /// tokens that never complete a character are dropped, as OpenAI does.
    fn split_tokens_on_unicode(&self, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
        const REPLACEMENT: char = '\u{FFFD}';
        let decoded_full: Vec<char> = self.decode_with_timestamps(tokens).chars().collect();
        let mut words = Vec::new();
        let mut word_tokens = Vec::new();
        let mut current = Vec::new();
        let mut char_offset = 0usize;
        for &token in tokens {
            current.push(token);
            let decoded = self.decode_with_timestamps(&current);
            let complete = match decoded.chars().position(|c| c == REPLACEMENT) {
                None => true,
                // A U+FFFD that is really in the text is not a broken character.
                Some(i) => decoded_full.get(char_offset + i) == Some(&REPLACEMENT),
            };
            if complete {
                char_offset += decoded.chars().count();
                words.push(decoded);
                word_tokens.push(std::mem::take(&mut current));
            }
        }
        (words, word_tokens)
    }

    /// Groups tokens into words: a new word starts at a special token, a subword that
    /// starts with a space, or punctuation.
    fn split_tokens_on_spaces(&self, tokens: &[u32]) -> (Vec<String>, Vec<Vec<u32>>) {
        let (subwords, subword_tokens) = self.split_tokens_on_unicode(tokens);
        let mut words: Vec<String> = Vec::new();
        let mut word_tokens: Vec<Vec<u32>> = Vec::new();
        for (subword, toks) in subwords.into_iter().zip(subword_tokens) {
            let special = toks[0] >= self.special.eot;
            let with_space = subword.starts_with(' ');
            // Python's `subword.strip() in string.punctuation` is a substring test.
            let punctuation = PUNCTUATION.contains(subword.trim());
            match (words.last_mut(), word_tokens.last_mut()) {
                (Some(word), Some(wt)) if !(special || with_space || punctuation) => {
                    word.push_str(&subword);
                    wt.extend(toks);
                }
                _ => {
                    words.push(subword);
                    word_tokens.push(toks);
                }
            }
        }
        (words, word_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const TINY_EN_VOCAB: usize = 51864;
    const BASE_VOCAB: usize = 51865;

    fn assets_dir() -> PathBuf {
        match std::env::var_os("STENO_ASSETS") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").unwrap_or_default();
                PathBuf::from(home).join(".cache/steno/assets")
            }
        }
    }

    fn tokenizer_json(model: &str) -> Option<PathBuf> {
        let path = assets_dir()
            .join("models")
            .join(model)
            .join("tokenizer.json");
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping: {} not found (set STENO_ASSETS)", path.display());
            None
        }
    }

    fn tiny_en() -> Option<Tokenizer> {
        tokenizer_json("tiny.en-ct2").map(|p| Tokenizer::from_file(p, TINY_EN_VOCAB).unwrap())
    }

    fn base() -> Option<Tokenizer> {
        tokenizer_json("base-ct2").map(|p| Tokenizer::from_file(p, BASE_VOCAB).unwrap())
    }

    /// The id of `name` as the raw tokenizer.json lists it.
    fn raw_id(path: &Path, name: &str) -> Option<u32> {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        json["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["content"] == name)
            .map(|t| t["id"].as_u64().unwrap() as u32)
    }

    #[test]
    fn languages_table() {
        assert_eq!(LANGUAGES.len(), 100);
        assert_eq!(LANGUAGES[0], ("en", "english"));
        assert_eq!(LANGUAGES[98], ("su", "sundanese"));
        assert_eq!(LANGUAGES[99], ("yue", "cantonese"));
        let mut codes: Vec<_> = LANGUAGES.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 100);
    }

    #[test]
    fn language_lookup() {
        assert_eq!(language_code("en"), Some("en"));
        assert_eq!(language_code("EN"), Some("en"));
        assert_eq!(language_code(" English "), Some("en"));
        assert_eq!(language_code("German"), Some("de"));
        assert_eq!(language_code("haitian creole"), Some("ht"));
        assert_eq!(language_code("Haitian"), Some("ht"));
        assert_eq!(language_code("mandarin"), Some("zh"));
        assert_eq!(language_code("Castilian"), Some("es"));
        assert_eq!(language_code("burmese"), Some("my"));
        assert_eq!(language_code("myanmar"), Some("my"));
        assert_eq!(language_code("moldovan"), Some("ro"));
        assert_eq!(language_code("yue"), Some("yue"));
        assert_eq!(language_code("cantonese"), Some("yue"));
        assert_eq!(language_code("klingon"), None);
        assert_eq!(language_code(""), None);
        assert_eq!(language_name("de"), Some("german"));
        assert_eq!(language_name("xx"), None);
    }

    #[test]
    fn task_from_str() {
        assert_eq!("transcribe".parse::<Task>().unwrap(), Task::Transcribe);
        assert_eq!("Translate".parse::<Task>().unwrap(), Task::Translate);
        assert!("summarize".parse::<Task>().is_err());
        assert_eq!(Task::Translate.to_string(), "translate");
        assert_eq!(Task::default(), Task::Transcribe);
    }

    #[test]
    fn rejects_bad_n_vocab() {
        let Some(path) = tokenizer_json("base-ct2") else {
            return;
        };
        assert!(Tokenizer::from_file(&path, 1000).is_err());
        // base's timestamps start at 50364: not a tiny.en-sized vocabulary.
        assert!(Tokenizer::from_file(&path, TINY_EN_VOCAB).is_err());
    }

    #[test]
    fn tiny_en_special_tokens() {
        let Some(path) = tokenizer_json("tiny.en-ct2") else {
            return;
        };
        let tok = Tokenizer::from_file(&path, TINY_EN_VOCAB).unwrap();
        assert!(!tok.is_multilingual());
        assert_eq!(tok.num_languages(), 99);
        assert_eq!(tok.eot(), 50256);
        assert_eq!(tok.sot(), 50257);
        assert_eq!(tok.translate(), 50357);
        assert_eq!(tok.transcribe(), 50358);
        assert_eq!(tok.sot_lm(), 50359);
        assert_eq!(tok.sot_prev(), 50360);
        assert_eq!(tok.no_speech(), 50361); // <|nocaptions|>
        assert_eq!(tok.no_timestamps(), 50362);
        // This tokenizer.json has no timestamp tokens: derived from no_timestamps.
        assert_eq!(raw_id(&path, "<|0.00|>"), None);
        assert_eq!(tok.timestamp_begin(), 50363);
        assert_eq!(tok.timestamp_end() as usize, TINY_EN_VOCAB - 1);
        assert_eq!(tok.language_token("en").unwrap(), 50258);
        // Hebrew is `<|iw|>` in this vocabulary.
        assert_eq!(raw_id(&path, "<|he|>"), None);
        assert_eq!(
            tok.language_token("he").unwrap(),
            raw_id(&path, "<|iw|>").unwrap()
        );
        assert_eq!(tok.to_language_code(50278), Some("he"));
        // Cross-check against the file itself.
        for (name, id) in [
            ("<|endoftext|>", tok.eot()),
            ("<|startoftranscript|>", tok.sot()),
            ("<|translate|>", tok.translate()),
            ("<|transcribe|>", tok.transcribe()),
            ("<|startoflm|>", tok.sot_lm()),
            ("<|startofprev|>", tok.sot_prev()),
            ("<|nocaptions|>", tok.no_speech()),
            ("<|notimestamps|>", tok.no_timestamps()),
            ("<|en|>", tok.language_token("en").unwrap()),
        ] {
            assert_eq!(raw_id(&path, name), Some(id), "{name}");
        }
        assert_eq!(tok.all_language_tokens().len(), 99);
        assert_eq!(tok.decode_with_timestamps(&[50363 + 54]), "<|1.08|>");
        assert_eq!(
            tok.decode_with_timestamps(&[tok.timestamp_end()]),
            "<|30.00|>"
        );
    }

    #[test]
    fn base_special_tokens() {
        let Some(path) = tokenizer_json("base-ct2") else {
            return;
        };
        let tok = Tokenizer::from_file(&path, BASE_VOCAB).unwrap();
        assert!(tok.is_multilingual());
        assert_eq!(tok.num_languages(), 99);
        assert_eq!(tok.eot(), 50257);
        assert_eq!(tok.sot(), 50258);
        assert_eq!(tok.language_token("en").unwrap(), 50259);
        assert_eq!(tok.language_token("su").unwrap(), 50357);
        assert_eq!(tok.translate(), 50358);
        assert_eq!(tok.transcribe(), 50359);
        assert_eq!(tok.sot_lm(), 50360);
        assert_eq!(tok.sot_prev(), 50361);
        assert_eq!(tok.no_speech(), 50362);
        assert_eq!(tok.no_timestamps(), 50363);
        assert_eq!(tok.timestamp_begin(), 50364);
        // Some multilingual tokenizer.json files list the timestamp tokens, others
        // (the one make setup installs) do not; where listed they must agree.
        if let Some(first) = raw_id(&path, "<|0.00|>") {
            assert_eq!(first, 50364);
            assert_eq!(raw_id(&path, "<|30.00|>"), Some(tok.timestamp_end()));
        }
        // Languages in the file are in LANGUAGES order, sot + 1 + index.
        let tokens = tok.all_language_tokens();
        assert_eq!(tokens.len(), 99);
        for (i, &t) in tokens.iter().enumerate() {
            assert_eq!(t, tok.sot() + 1 + i as u32);
            assert_eq!(tok.to_language_code(t), Some(LANGUAGES[i].0));
        }
        assert_eq!(tok.to_language_code(tok.sot()), None);
        assert_eq!(tok.all_language_codes()[1], "zh");
        // yue is large-v3 only.
        assert!(matches!(
            tok.language_token("yue"),
            Err(WhisperError::UnsupportedLanguage(_))
        ));
        assert!(tok.language_token("klingon").is_err());
        assert_eq!(tok.language_token("Japanese").unwrap(), 50266);
    }

    #[test]
    fn sot_sequences() {
        if let Some(tok) = tiny_en() {
            assert_eq!(
                tok.sot_sequence(None, Task::Transcribe).unwrap(),
                vec![50257]
            );
            assert_eq!(
                tok.sot_sequence(Some("en"), Task::Translate).unwrap(),
                vec![50257]
            );
            assert!(tok.sot_sequence(Some("fr"), Task::Transcribe).is_err());
            assert_eq!(
                tok.sot_sequence_including_notimestamps(Some("english"), Task::Transcribe)
                    .unwrap(),
                vec![50257, 50362]
            );
        }
        if let Some(tok) = base() {
            assert_eq!(
                tok.sot_sequence(Some("en"), Task::Transcribe).unwrap(),
                vec![50258, 50259, 50359]
            );
            assert_eq!(
                tok.sot_sequence(Some("ja"), Task::Translate).unwrap(),
                vec![50258, 50266, 50358]
            );
            assert_eq!(
                tok.sot_sequence(None, Task::Transcribe).unwrap(),
                vec![50258, 50359]
            );
            assert_eq!(
                tok.sot_sequence_including_notimestamps(Some("en"), Task::Transcribe)
                    .unwrap(),
                vec![50258, 50259, 50359, 50363]
            );
            assert!(matches!(
                tok.sot_sequence(Some("xx"), Task::Transcribe),
                Err(WhisperError::UnsupportedLanguage(_))
            ));
        }
    }

    #[test]
    fn round_trips() {
        for tok in [tiny_en(), base()].into_iter().flatten() {
            for text in [
                " Hello world, this is a test.",
                "こんにちは世界",
                " Привет",
                "Привет, мир! 123 — ünïcödé ♪",
                "",
            ] {
                let ids = tok.encode(text).unwrap();
                assert!(ids.iter().all(|&t| t < tok.eot()), "{text}: {ids:?}");
                assert_eq!(tok.decode(&ids), text);
                assert_eq!(tok.decode_with_timestamps(&ids), text);
            }
        }
    }

    #[test]
    fn encode_known_ids() {
        // Single-token words, ids as the tokenizer.json vocabularies list "ĠHello" and
        // "Ġworld" (the English-only vocabulary is GPT-2's, the multilingual one differs).
        if let Some(tok) = tiny_en() {
            assert_eq!(tok.encode(" Hello world").unwrap(), vec![18435, 995]);
        }
        if let Some(tok) = base() {
            assert_eq!(tok.encode(" Hello world").unwrap(), vec![2425, 1002]);
        }
    }

    #[test]
    fn special_markup_is_plain_text() {
        let Some(tok) = base() else { return };
        let ids = tok.encode("<|en|><|endoftext|> <|0.00|>").unwrap();
        assert!(ids.iter().all(|&t| t < tok.eot()), "{ids:?}");
        assert_eq!(tok.decode(&ids), "<|en|><|endoftext|> <|0.00|>");
    }

    #[test]
    fn decode_drops_special_and_timestamps() {
        let Some(tok) = base() else { return };
        let mut ids = tok.sot_sequence(Some("en"), Task::Transcribe).unwrap();
        ids.push(tok.timestamp_begin());
        ids.extend(tok.encode(" Hello world.").unwrap());
        ids.push(tok.timestamp_begin() + 54);
        ids.push(tok.eot());
        assert_eq!(tok.decode(&ids), " Hello world.");
        assert_eq!(
            tok.decode_with_timestamps(&ids),
            "<|startoftranscript|><|en|><|transcribe|><|0.00|> Hello world.<|1.08|><|endoftext|>"
        );
        assert_eq!(
            tok.timestamp_seconds(tok.timestamp_begin() + 54),
            Some(54.0 * 0.02)
        );
        assert_eq!(tok.timestamp_seconds(tok.eot()), None);
    }

    #[test]
    fn partial_utf8_does_not_panic() {
        let Some(tok) = base() else { return };
        let ids = tok.encode("世").unwrap();
        // Whatever the split, every prefix decodes without panicking.
        for n in 0..=ids.len() {
            let _ = tok.decode(&ids[..n]);
        }
        // A lone byte token of a 3-byte character decodes to U+FFFD.
        let e4 = tok.encode("\u{4e16}").unwrap(); // 世 = E4 B8 96
        if e4.len() > 1 {
            assert!(tok.decode(&e4[..1]).contains('\u{FFFD}'));
        }
        assert_eq!(tok.decode(&[u32::MAX, 1_000_000]), "");
    }

    #[test]
    fn non_speech_tokens_match_ct2_suppress_ids() {
        // The "suppress_ids" of the CTranslate2 conversions' config.json, which the
        // converter computes with OpenAI's tokenizer: non_speech_tokens followed by
        // the task/sot/prev/lm/no-speech tokens (left out here).
        if let Some(tok) = tiny_en() {
            let expected: &[u32] = &[
                1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92,
                93, 357, 366, 438, 532, 685, 705, 796, 930, 1058, 1220, 1267, 1279, 1303, 1343,
                1377, 1391, 1635, 1782, 1875, 2162, 2361, 2488, 3467, 4008, 4211, 4600, 4808, 5299,
                5855, 6329, 7203, 9609, 9959, 10563, 10786, 11420, 11709, 11907, 13163, 13697,
                13700, 14808, 15306, 16410, 16791, 17992, 19203, 19510, 20724, 22305, 22935, 27007,
                30109, 30420, 33409, 34949, 40283, 40493, 40549, 47282, 49146,
            ];
            assert_eq!(tok.non_speech_tokens(), expected);
        }
        if let Some(tok) = base() {
            let expected: &[u32] = &[
                1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92,
                93, 359, 503, 522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853, 1982, 2460, 2627,
                3246, 3253, 3268, 3536, 3846, 3961, 4183, 4667, 6585, 6647, 7273, 9061, 9383,
                10428, 10929, 11938, 12033, 12331, 12562, 13793, 14157, 14635, 15265, 15618, 16553,
                16604, 18362, 18956, 20075, 21675, 22520, 26130, 26161, 26435, 28279, 29464, 31650,
                32302, 32470, 36865, 42863, 47425, 49870, 50254,
            ];
            assert_eq!(tok.non_speech_tokens(), expected);
        }
    }

    #[test]
    fn split_words_english() {
        let Some(tok) = base() else { return };
        let mut ids = tok
            .encode(" Hello, world! It's a well-known test.")
            .unwrap();
        ids.push(tok.eot());
        let (words, word_tokens) = tok.split_to_word_tokens(&ids, Some("en"));
        assert_eq!(
            words,
            [
                " Hello",
                ",",
                " world",
                "!",
                " It's",
                " a",
                " well",
                "-known",
                " test",
                ".",
                "<|endoftext|>"
            ]
        );
        assert_eq!(word_tokens.concat(), ids);
        for (w, t) in words.iter().zip(&word_tokens) {
            assert_eq!(&tok.decode_with_timestamps(t), w);
        }
        // No language: spaces as well.
        assert_eq!(tok.split_to_word_tokens(&ids, None).0, words);
    }

    #[test]
    fn split_words_japanese() {
        let Some(tok) = base() else { return };
        let text = "こんにちは世界。";
        let mut ids = tok.encode(text).unwrap();
        ids.push(tok.eot());
        let (words, word_tokens) = tok.split_to_word_tokens(&ids, Some("ja"));
        assert_eq!(word_tokens.concat(), ids);
        assert_eq!(words.concat(), format!("{text}<|endoftext|>"));
        // Every word is whole characters, each made of whole tokens.
        for (w, t) in words.iter().zip(&word_tokens) {
            assert!(!w.contains('\u{FFFD}'), "{words:?}");
            assert_eq!(&tok.decode_with_timestamps(t), w);
        }
        // Characters that need several tokens stay together: no word is empty.
        assert!(words.iter().all(|w| !w.is_empty()));
        assert!(words.len() >= 3, "{words:?}");
        // Japanese via name, and Chinese, use the same splitting.
        assert_eq!(tok.split_to_word_tokens(&ids, Some("Japanese")).0, words);
        assert_eq!(tok.split_to_word_tokens(&ids, Some("zh")).0, words);
        // Space splitting would keep the whole unspaced run as one word.
        let (space_words, _) = tok.split_to_word_tokens(&ids, Some("en"));
        assert!(space_words.len() < words.len());
    }

    #[test]
    fn split_on_unicode_groups_multi_token_chars() {
        let Some(tok) = base() else { return };
        // Find a character that takes more than one token.
        let c = ["𝄞", "😀", "龘", "鬱"]
            .into_iter()
            .find(|c| tok.encode(c).unwrap().len() > 1)
            .expect("some character needs several tokens");
        let ids = tok.encode(&format!("a{c}b")).unwrap();
        let (words, word_tokens) = tok.split_tokens_on_unicode(&ids);
        assert!(words.contains(&c.to_string()), "{words:?}");
        assert_eq!(word_tokens.concat(), ids);
    }

    /// A large-v3-style vocabulary made from base's: `<|yue|>` after `<|su|>` and every
    /// later special token shifted by one.
    #[test]
    fn large_v3_style_vocabulary() {
        let Some(path) = tokenizer_json("base-ct2") else {
            return;
        };
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let added = json["added_tokens"].as_array_mut().unwrap();
        let su = added
            .iter()
            .find(|t| t["content"] == "<|su|>")
            .map(|t| t["id"].as_u64().unwrap())
            .unwrap();
        let mut yue = None;
        for t in added.iter_mut() {
            let id = t["id"].as_u64().unwrap();
            if id > su {
                t["id"] = (id + 1).into();
            }
            if id == su {
                let mut entry = t.clone();
                entry["content"] = "<|yue|>".into();
                entry["id"] = (su + 1).into();
                yue = Some(entry);
            }
        }
        let pos = added.iter().position(|t| t["content"] == "<|su|>").unwrap();
        added.insert(pos + 1, yue.unwrap());
        let bytes = serde_json::to_vec(&json).unwrap();

        let tok = Tokenizer::from_json_bytes(&bytes, 51866).unwrap();
        assert!(tok.is_multilingual());
        assert_eq!(tok.num_languages(), 100);
        assert_eq!(tok.eot(), 50257);
        assert_eq!(tok.sot(), 50258);
        assert_eq!(tok.language_token("en").unwrap(), 50259);
        assert_eq!(tok.language_token("yue").unwrap(), 50358);
        assert_eq!(tok.language_token("Cantonese").unwrap(), 50358);
        assert_eq!(tok.to_language_code(50358), Some("yue"));
        assert_eq!(tok.all_language_tokens().len(), 100);
        assert_eq!(tok.translate(), 50359);
        assert_eq!(tok.transcribe(), 50360);
        assert_eq!(tok.sot_lm(), 50361);
        assert_eq!(tok.sot_prev(), 50362);
        assert_eq!(tok.no_speech(), 50363);
        assert_eq!(tok.no_timestamps(), 50364);
        assert_eq!(tok.timestamp_begin(), 50365);
        assert_eq!(tok.timestamp_end(), 51865);
        assert_eq!(
            tok.sot_sequence(Some("yue"), Task::Transcribe).unwrap(),
            vec![50258, 50358, 50360]
        );
        // Cantonese splits on characters.
        let ids = tok.encode("你好，我係香港人。").unwrap();
        let (words, _) = tok.split_to_word_tokens(&ids, Some("yue"));
        assert_eq!(words, tok.split_tokens_on_unicode(&ids).0);
        assert!(words.len() > 1, "{words:?}");
        // The same file does not fit base's n_vocab.
        assert!(Tokenizer::from_json_bytes(&bytes, BASE_VOCAB).is_err());
    }
}
