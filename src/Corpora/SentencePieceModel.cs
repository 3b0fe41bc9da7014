using Google.Protobuf;

namespace Sparsity.Corpora;

/// <summary>
/// SentencePiece model files as Microsoft.ML.Tokenizers can open them. Its Unigram model (3.0.0) indexes its vocabulary
/// with the beginning-of-sentence id, so a model without one (bos_id −1: T5's spiece.model) throws
/// IndexOutOfRangeException; such a model is given its unknown piece as BOS, which is never emitted (BOS is not added).
/// </summary>
public static class SentencePieceModel
{
    // Field numbers of sentencepiece_model.proto: ModelProto.trainer_spec, TrainerSpec.{unk_id, bos_id, unk_piece,
    // bos_piece}.
    const int TrainerSpec = 2,
        UnkId = 40,
        BosId = 41,
        UnkPiece = 45,
        BosPiece = 46;

    /// <summary>The model's bytes, with bos_id and bos_piece set to the unknown piece's where bos_id is
    /// negative.</summary>
    public static byte[] Loadable(byte[] model)
    {
        var input = new CodedInputStream(model);
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer);
        uint tag;
        while ((tag = input.ReadTag()) != 0)
            if (
                WireFormat.GetTagFieldNumber(tag) == TrainerSpec
                && WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited
            )
            {
                output.WriteTag(tag);
                output.WriteBytes(ByteString.CopyFrom(WithBos(input.ReadBytes().ToByteArray())));
            }
            else
                Copy(input, output, tag);
        output.Flush();
        return buffer.ToArray();
    }

    static byte[] WithBos(byte[] spec)
    {
        int unk = 0,
            bos = 0; // proto defaults
        string unkPiece = "<unk>";
        var scan = new CodedInputStream(spec);
        uint tag;
        while ((tag = scan.ReadTag()) != 0)
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case UnkId:
                    unk = scan.ReadInt32();
                    break;
                case BosId:
                    bos = scan.ReadInt32();
                    break;
                case UnkPiece:
                    unkPiece = scan.ReadString();
                    break;
                default:
                    scan.SkipLastField();
                    break;
            }
        if (bos >= 0)
            return spec;
        var input = new CodedInputStream(spec);
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer);
        while ((tag = input.ReadTag()) != 0)
            if (WireFormat.GetTagFieldNumber(tag) is BosId or BosPiece)
                input.SkipLastField();
            else
                Copy(input, output, tag);
        output.WriteTag(BosId, WireFormat.WireType.Varint);
        output.WriteInt32(unk);
        output.WriteTag(BosPiece, WireFormat.WireType.LengthDelimited);
        output.WriteString(unkPiece);
        output.Flush();
        return buffer.ToArray();
    }

    static void Copy(CodedInputStream input, CodedOutputStream output, uint tag)
    {
        output.WriteTag(tag);
        switch (WireFormat.GetTagWireType(tag))
        {
            case WireFormat.WireType.Varint:
                output.WriteUInt64(input.ReadUInt64());
                break;
            case WireFormat.WireType.Fixed32:
                output.WriteFixed32(input.ReadFixed32());
                break;
            case WireFormat.WireType.Fixed64:
                output.WriteFixed64(input.ReadFixed64());
                break;
            case WireFormat.WireType.LengthDelimited:
                output.WriteBytes(input.ReadBytes());
                break;
            default:
                throw new InvalidDataException(
                    $"SentencePiece model field {WireFormat.GetTagFieldNumber(tag)} has wire type {WireFormat.GetTagWireType(tag)}, which sentencepiece_model.proto does not use."
                );
        }
    }
}
