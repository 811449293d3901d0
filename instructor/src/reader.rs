//! `reader` owns reading instructions at run time: the text encoder, and the intent model fitted
//! at start on the labelled dev split built into the binary plus the prototype sentences
//! ([`crate::intent`]). Fitting is deterministic: the same model directory gives the same
//! readings.

use protocol::Reading;

use crate::encoder::{EncoderError, TextEncoder};
use crate::intent::{self, DataError, FitConfig, IntentModel, PROTOTYPES};

/// Why the reader cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The text encoder failed.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The built-in labelled set does not parse.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Instruction in, vector and reading out.
pub struct Reader {
    encoder: TextEncoder,
    model: IntentModel,
}

impl Reader {
    /// Fits the intent model on the built-in dev split and the prototypes.
    pub fn new(encoder: TextEncoder) -> Result<Self, ReaderError> {
        let dev = intent::parse_labelled(intent::DEV_INSTRUCTIONS)?;
        let dev_v = encoder.encode(&dev.iter().map(|l| l.text.as_str()).collect::<Vec<_>>())?;
        let proto_v = encoder.encode(&PROTOTYPES.iter().map(|(_, t)| *t).collect::<Vec<_>>())?;
        let examples: Vec<_> = dev_v.iter().map(Vec::as_slice).zip(&dev).collect();
        let protos: Vec<_> = PROTOTYPES.iter().zip(&proto_v).map(|((i, t), v)| (*i, *t, v.as_slice())).collect();
        let model = IntentModel::fit(&examples, &protos, &FitConfig::default());
        Ok(Reader { encoder, model })
    }

    /// The text encoder.
    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// The fitted intent model.
    pub fn model(&self) -> &IntentModel {
        &self.model
    }

    /// Reads one instruction: its vector and reading.
    pub fn read(&self, text: &str) -> Result<(Vec<f32>, Reading), EncoderError> {
        let v = self.encoder.encode(&[text])?.remove(0);
        let reading = self.model.read(text, &v);
        Ok((v, reading))
    }
}
